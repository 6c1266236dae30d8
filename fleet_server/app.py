"""The FastAPI application: ``create_app(settings)``.

Without a ``runtime`` the app starts one in its lifespan (database, embedded broker when
``settings.mqtt_url`` is None, MQTT bridge) and closes it on shutdown. ``edgefleet fleet serve``
starts the runtime first, so configuration errors are reported before uvicorn runs, and
passes it in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edgefleet import __version__
from edgefleet.errors import EdgefleetError
from fleet_server.access.router import router as access_router
from fleet_server.auth import Viewer
from fleet_server.cohorts.router import router as cohorts_router
from fleet_server.deps import RuntimeDep
from fleet_server.devices.router import enrolment_router
from fleet_server.devices.router import router as devices_router
from fleet_server.ingest.router import router as ingest_router
from fleet_server.models.router import router as models_router
from fleet_server.rollouts.router import router as rollouts_router
from fleet_server.runtime import FleetRuntime
from fleet_server.settings import FleetSettings

API_PREFIX = "/api/v1"


class Info(BaseModel):
    version: str
    mqtt_url: str


class IngestInfo(BaseModel):
    ingested: int = Field(description="MQTT messages this process applied since it started.")
    shared_subscriptions: bool
    executor_ticks: int


def create_app(settings: FleetSettings, *, runtime: FleetRuntime | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = None
        if runtime is None:
            owned = await run_in_threadpool(FleetRuntime.start, settings)
            _install(app, owned)
        try:
            yield
        finally:
            if owned is not None:
                await run_in_threadpool(owned.close)

    app = FastAPI(
        title="Edgefleet fleet server",
        version=__version__,
        description="Registry, devices, cohorts, gated rollouts and ingest of an Edgefleet fleet.",
        lifespan=lifespan,
    )
    if runtime is not None:
        _install(app, runtime)
    app.add_exception_handler(EdgefleetError, _edgefleet_error)  # type: ignore[arg-type]

    api = APIRouter(prefix=API_PREFIX)

    @api.get("/info", tags=["info"])
    def info(current: RuntimeDep) -> Info:
        """Server version and the MQTT broker URL devices should use (no auth)."""
        return Info(version=__version__, mqtt_url=current.mqtt_url)

    @api.get("/info/ingest", tags=["info"], dependencies=[Viewer])
    def ingest_info(current: RuntimeDep) -> IngestInfo:
        """Counters of this server process: messages ingested, executor ticks."""
        executor = current.executor
        return IngestInfo(
            ingested=current.bridge.ingested,
            shared_subscriptions=current.bridge.shared,
            executor_ticks=executor.ticks if executor is not None else 0,
        )

    api.include_router(models_router)
    api.include_router(devices_router)
    api.include_router(ingest_router)
    api.include_router(enrolment_router)
    api.include_router(cohorts_router)
    api.include_router(rollouts_router)
    api.include_router(access_router)
    app.include_router(api)
    return app


def _install(app: FastAPI, runtime: FleetRuntime) -> None:
    app.state.runtime = runtime
    app.state.publisher = runtime.bridge


async def _edgefleet_error(_request: Request, exc: EdgefleetError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=exc.http_status, headers=headers)
