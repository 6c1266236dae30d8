"""Device enrolment and desired state. Pure database work: the router commits and publishes."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from edgefleet.codec import decode
from edgefleet.protocol.messages import DesiredState
from fleet_server.devices.desired import write_desired
from fleet_server.devices.tables import DeviceRow, EnrolmentTokenRow
from fleet_server.errors import ConflictError, NotFoundError, UnauthorizedError
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
    rows = select(DeviceRow).options(undefer(DeviceRow.last_telemetry))
    return list(session.scalars(rows.order_by(DeviceRow.device_id)))


def assign_desired(session: Session, *, device_id: str, model: str, version: str) -> DesiredState:
    """Point a device at the artifact of ``model``/``version`` built for its profile.

    Refused (409) while an active rollout holds the device: the executor is then its only writer.
    """
    from fleet_server.rollouts.service import active_rollout_of_device

    device = get_device(session, device_id)
    holder = active_rollout_of_device(session, device_id)
    if holder is not None:
        raise ConflictError(
            f"device {device_id!r} is part of active rollout {holder}: pause, abort or finish it "
            "before assigning a model by hand"
        )
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
    desired = write_desired(device, artifact)
    session.flush()
    return desired


def all_desired_states(session: Session) -> list[tuple[str, DesiredState]]:
    """Every device's current desired state, to republish after the broker connection returns."""
    rows = session.execute(
        select(DeviceRow.device_id, DeviceRow.desired_state).where(
            DeviceRow.desired_state.is_not(None)
        )
    )
    return [(device_id, decode(DesiredState, state)) for device_id, state in rows]


def matches(labels: dict[str, object], selector: dict[str, object]) -> bool:
    """Equality label selector: every key of ``selector`` has the same value in ``labels``."""
    return all(key in labels and str(labels[key]) == str(value) for key, value in selector.items())


def update_labels(
    session: Session, *, device_id: str, set_labels: dict[str, str], remove: list[str]
) -> DeviceRow:
    device = get_device(session, device_id)
    labels = {str(k): str(v) for k, v in device.labels.items()}
    labels.update(set_labels)
    for key in remove:
        labels.pop(key, None)
    device.labels = labels
    session.flush()
    return device


def create_enrolment_token(
    session: Session,
    *,
    name: str,
    labels: dict[str, str],
    max_uses: int | None,
    ttl_s: float | None,
) -> tuple[EnrolmentTokenRow, str]:
    """A token devices trade for their own credentials; ``labels`` are given to each of them."""
    token = new_token()
    now = time.time()
    row = EnrolmentTokenRow(
        name=name,
        token_sha256=hash_token(token),
        labels=dict(labels),
        max_uses=max_uses,
        uses=0,
        expires_at=now + ttl_s if ttl_s is not None else None,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row, token


def enrol_device(
    session: Session,
    *,
    enrolment_token: str,
    device_id: str,
    profile: str,
    labels: dict[str, str],
) -> tuple[DeviceRow, str]:
    """Register a device with an enrolment token; returns the row and the device's own token."""
    grant = session.scalar(
        select(EnrolmentTokenRow)
        .where(EnrolmentTokenRow.token_sha256 == hash_token(enrolment_token))
        .with_for_update()
    )
    if grant is None:
        raise UnauthorizedError("the enrolment token is not valid")
    if grant.expires_at is not None and grant.expires_at < time.time():
        raise UnauthorizedError(f"the enrolment token {grant.name!r} has expired")
    if grant.max_uses is not None and grant.uses >= grant.max_uses:
        raise UnauthorizedError(
            f"the enrolment token {grant.name!r} was used {grant.uses} time(s), its limit"
        )
    grant.uses += 1
    merged = {str(k): str(v) for k, v in grant.labels.items()} | labels
    return register_device(session, device_id=device_id, profile=profile, labels=merged)
