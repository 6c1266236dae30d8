"""FastAPI dependencies: the runtime, a database session per request, the MQTT publisher.

The session never commits by itself: a router commits at the request boundary, after the
service returned, and only then asks the publisher to publish (side effects after the commit).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from fleet_server.mqtt.publisher import Publisher
from fleet_server.runtime import FleetRuntime


def get_runtime(request: Request) -> FleetRuntime:
    runtime: FleetRuntime = request.app.state.runtime
    return runtime


def get_session(request: Request) -> Iterator[Session]:
    with get_runtime(request).sessions() as session:
        yield session


def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


RuntimeDep = Annotated[FleetRuntime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
