"""Device enrolment and desired state. Pure database work: the router commits and publishes."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgefleet.protocol.messages import DesiredState
from fleet_server.devices.tables import DeviceRow
from fleet_server.errors import ConflictError, NotFoundError
from fleet_server.models.tables import ArtifactRow
from fleet_server.tokens import hash_token, new_token


def register_device(
    session: Session, *, device_id: str, profile: str, labels: dict[str, str]
) -> tuple[DeviceRow, str]:
    """Enrol a device; returns the row and its token (shown once, stored hashed)."""
    from hardware_profiles import load_profile

    load_profile(profile)  # ProfileError (422) names the unknown tag and the known ones
    if session.get(DeviceRow, device_id) is not None:
        raise ConflictError(f"device {device_id!r} is already registered")
    token = new_token()
    row = DeviceRow(
        device_id=device_id,
        profile=profile,
        labels=dict(labels),
        token_sha256=hash_token(token),
        registered_at=time.time(),
        online=False,
        deployment_detail="",
        predictions_received=0,
    )
    session.add(row)
    session.flush()
    return row, token


def get_device(session: Session, device_id: str) -> DeviceRow:
    row = session.get(DeviceRow, device_id)
    if row is None:
        raise NotFoundError(f"device {device_id!r} is not registered")
    return row


def list_devices(session: Session) -> list[DeviceRow]:
    return list(session.scalars(select(DeviceRow).order_by(DeviceRow.device_id)))


def assign_desired(session: Session, *, device_id: str, model: str, version: str) -> DesiredState:
    """Point a device at the artifact of ``model``/``version`` built for its profile."""
    device = get_device(session, device_id)
    artifact = session.scalar(
        select(ArtifactRow).where(
            ArtifactRow.name == model,
            ArtifactRow.version == version,
            ArtifactRow.profile == device.profile,
        )
    )
    if artifact is None:
        raise NotFoundError(
            f"no artifact of model {model!r} version {version!r} for profile "
            f"{device.profile!r} (device {device_id!r}): push a bundle built for that profile"
        )
    device.desired_model = artifact.name
    device.desired_version = artifact.version
    device.desired_artifact_id = artifact.id
    device.deployment_id = uuid.uuid4().hex
    device.desired_at = time.time()
    session.flush()
    return desired_state_of(device, artifact)


def desired_state_of(device: DeviceRow, artifact: ArtifactRow) -> DesiredState:
    assert device.deployment_id is not None and device.desired_at is not None
    return DesiredState(
        deployment_id=device.deployment_id,
        model=artifact.name,
        version=artifact.version,
        artifact_url=f"/api/v1/artifacts/{artifact.id}",
        sha256=artifact.sha256,
        size=artifact.size,
        ts=device.desired_at,
    )


def all_desired_states(session: Session) -> list[tuple[str, DesiredState]]:
    """Every device's current desired state, to republish after the broker connection returns."""
    rows = session.execute(
        select(DeviceRow, ArtifactRow).join(
            ArtifactRow, DeviceRow.desired_artifact_id == ArtifactRow.id
        )
    )
    return [(device.device_id, desired_state_of(device, artifact)) for device, artifact in rows]
