"""Register verified bundles and find their files. The router commits; this only flushes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgefleet.bundle import BundleError, VerifyKey, unpack_bundle, verify_bundle
from fleet_server.errors import ConflictError, InvalidBundleError, NotFoundError
from fleet_server.models.tables import ArtifactRow


def register_bundle(
    session: Session,
    *,
    tar_path: Path,
    sha256: str,
    size: int,
    keys: Sequence[VerifyKey],
    artifacts_dir: Path,
    work_dir: Path,
) -> ArtifactRow:
    """Unpack and verify ``tar_path``, move it to ``artifacts_dir/<sha256>.tar``, add a row.

    Raises :class:`InvalidBundleError` (422, ``<file>: <reason>``) when verification fails and
    :class:`ConflictError` (409) when the same model, version and profile is already registered.
    """
    try:
        unpacked = unpack_bundle(tar_path, work_dir / "unpacked")
        verified = verify_bundle(unpacked, keys)
    except BundleError as exc:
        raise InvalidBundleError(str(exc)) from exc
    manifest = verified.manifest
    existing = session.scalar(
        select(ArtifactRow.id).where(
            ArtifactRow.name == manifest.name,
            ArtifactRow.version == manifest.version,
            ArtifactRow.profile == manifest.profile,
        )
    )
    if existing is not None:
        raise ConflictError(
            f"model {manifest.name!r} version {manifest.version!r} for profile "
            f"{manifest.profile!r} is already registered (artifact {existing}); "
            "publish a new version instead"
        )
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    tar_path.replace(artifacts_dir / f"{sha256}.tar")
    row = ArtifactRow(
        name=manifest.name,
        version=manifest.version,
        profile=manifest.profile,
        precision=manifest.precision,
        format=manifest.format,
        sha256=sha256,
        size=size,
        key_id=verified.key_id,
        manifest=manifest.model_dump(mode="json"),
        uploaded_at=time.time(),
    )
    session.add(row)
    session.flush()
    return row


def list_artifacts(session: Session) -> list[ArtifactRow]:
    return list(
        session.scalars(
            select(ArtifactRow).order_by(ArtifactRow.name, ArtifactRow.version, ArtifactRow.profile)
        )
    )


def get_artifact(session: Session, artifact_id: int) -> ArtifactRow:
    row = session.get(ArtifactRow, artifact_id)
    if row is None:
        raise NotFoundError(f"artifact {artifact_id} does not exist")
    return row


def artifact_file(row: ArtifactRow, artifacts_dir: Path) -> Path:
    path = artifacts_dir / f"{row.sha256}.tar"
    if not path.is_file():
        raise NotFoundError(f"artifact {row.id} is registered but its file {path} is missing")
    return path
