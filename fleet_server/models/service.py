"""Register verified bundles and find their files. The router commits; this only flushes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgefleet.bundle import BundleError, VerifyKey, unpack_bundle, verify_bundle
from edgefleet.codec import encode
from fleet_server.errors import ConflictError, InvalidBundleError, NotFoundError
from fleet_server.models.semver import check_semver, sort_key
from fleet_server.models.tables import AliasRow, ArtifactRow


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
    check_semver(manifest.version, where="manifest.json")
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
        manifest=encode(manifest),
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


def versions_of(session: Session, model: str) -> dict[str, list[ArtifactRow]]:
    """Artifacts of ``model`` by version, newest version first (semver order)."""
    rows = session.scalars(select(ArtifactRow).where(ArtifactRow.name == model))
    versions: dict[str, list[ArtifactRow]] = {}
    for row in rows:
        versions.setdefault(row.version, []).append(row)
    if not versions:
        raise NotFoundError(f"model {model!r} is not registered")
    ordered = sorted(versions, key=sort_key, reverse=True)
    return {version: sorted(versions[version], key=lambda r: r.profile) for version in ordered}


def aliases_of(session: Session, model: str) -> dict[str, str]:
    rows = session.scalars(select(AliasRow).where(AliasRow.model == model))
    return {row.alias: row.version for row in rows}


def set_alias(session: Session, *, model: str, alias: str, version: str) -> AliasRow:
    if version not in versions_of(session, model):
        raise NotFoundError(f"model {model!r} has no version {version!r}")
    row = session.get(AliasRow, (model, alias))
    if row is None:
        row = AliasRow(model=model, alias=alias, version=version, updated_at=time.time())
        session.add(row)
    else:
        row.version, row.updated_at = version, time.time()
    session.flush()
    return row


def resolve_version(session: Session, *, model: str, version: str) -> str:
    """``version`` itself when registered, else the version an alias of that name points to."""
    versions = versions_of(session, model)
    if version in versions:
        return version
    alias = session.get(AliasRow, (model, version))
    if alias is None:
        raise NotFoundError(
            f"model {model!r} has no version or alias {version!r} (versions: {', '.join(versions)})"
        )
    return alias.version


def artifact_for(session: Session, *, model: str, version: str, profile: str) -> ArtifactRow | None:
    return session.scalar(
        select(ArtifactRow).where(
            ArtifactRow.name == model,
            ArtifactRow.version == version,
            ArtifactRow.profile == profile,
        )
    )
