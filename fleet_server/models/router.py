"""``/api/v1/models`` (upload, list) and ``/api/v1/artifacts/{id}`` (download)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from fleet_server.auth import Operator, OperatorOrDevice, Viewer
from fleet_server.deps import RuntimeDep, SessionDep
from fleet_server.errors import PayloadTooLargeError, UploadsDisabledError
from fleet_server.models import service
from fleet_server.models.schemas import AliasSet, ArtifactOut, ModelView, VersionView
from fleet_server.runtime import FleetRuntime, no_keys_message

router = APIRouter(tags=["models"])

_TAR_BODY = {
    "requestBody": {
        "required": True,
        "description": "The bundle .tar, signed by a trusted key.",
        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/models",
    status_code=201,
    dependencies=[Operator],
    openapi_extra=_TAR_BODY,
    responses={
        409: {"description": "This model, version and profile is already registered."},
        413: {"description": "The body is larger than the upload limit."},
        422: {"description": "The bundle failed verification: '<file>: <reason>'."},
        503: {"description": "No trusted public key is configured."},
    },
)
async def upload_model(request: Request, runtime: RuntimeDep, session: SessionDep) -> ArtifactOut:
    """Upload a signed bundle tar (raw body); it is verified before it is stored."""
    settings = runtime.settings
    if not runtime.trusted_keys:
        raise UploadsDisabledError(no_keys_message(settings))
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the bundle is {declared} bytes; the limit is {limit}")
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upload-", dir=settings.tmp_dir) as work:
        tar_path = Path(work) / "bundle.tar"
        sha256, size = await _receive(request, tar_path, limit)
        return await run_in_threadpool(_register, runtime, session, tar_path, sha256, size)


def _register(
    runtime: FleetRuntime, session: SessionDep, tar_path: Path, sha256: str, size: int
) -> ArtifactOut:
    row = service.register_bundle(
        session,
        tar_path=tar_path,
        sha256=sha256,
        size=size,
        keys=runtime.trusted_keys,
        artifacts_dir=runtime.settings.artifacts_dir,
        work_dir=tar_path.parent,
    )
    session.commit()
    return ArtifactOut.of(row)


async def _receive(request: Request, path: Path, limit: int) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"the bundle is larger than the limit of {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


@router.get("/models", dependencies=[Viewer])
def list_models(session: SessionDep) -> list[ArtifactOut]:
    """Every registered artifact (one per model, version and profile)."""
    return [ArtifactOut.of(row) for row in service.list_artifacts(session)]


@router.get("/models/{model}", dependencies=[Viewer], responses={404: {"description": "Unknown."}})
def show_model(model: str, session: SessionDep) -> ModelView:
    """Versions (newest first) with their per-profile artifacts and lineage, and aliases."""
    versions = service.versions_of(session, model)
    return ModelView(
        model=model,
        versions=[
            VersionView(version=v, artifacts=[ArtifactOut.of(row) for row in rows])
            for v, rows in versions.items()
        ],
        aliases=service.aliases_of(session, model),
    )


@router.put("/models/{model}/aliases/{alias}", dependencies=[Operator])
def set_alias(model: str, alias: str, body: AliasSet, session: SessionDep) -> ModelView:
    """Point an alias (``production``, ``staging``...) at a version."""
    service.set_alias(session, model=model, alias=alias, version=body.version)
    session.commit()
    return show_model(model, session)


@router.get(
    "/artifacts/{artifact_id}",
    dependencies=[OperatorOrDevice],
    response_class=FileResponse,
    responses={200: {"content": {"application/x-tar": {}}, "description": "The bundle tar."}},
)
def download_artifact(artifact_id: int, runtime: RuntimeDep, session: SessionDep) -> FileResponse:
    """The bundle tar; the operator token or any registered device's token may fetch it."""
    row = service.get_artifact(session, artifact_id)
    path = service.artifact_file(row, runtime.settings.artifacts_dir)
    return FileResponse(
        path, media_type="application/x-tar", filename=f"{row.name}-{row.version}.tar"
    )
