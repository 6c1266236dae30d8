"""The one retained desired state per device: built here, stored on the device row.

Only two writers call :func:`write_desired`: the rollout executor, and an operator's direct
assignment of a device that no active rollout holds. The caller commits, then publishes the
returned :class:`DesiredState` (side effects after the commit).
"""

from __future__ import annotations

import time
import uuid

from edgefleet.codec import decode, encode
from edgefleet.protocol.messages import Artifact, DesiredState, HealthPolicy, ShadowSpec
from fleet_server.devices.tables import DeviceRow
from fleet_server.models.tables import ArtifactRow


def artifact_url(artifact: ArtifactRow) -> str:
    return f"/api/v1/artifacts/{artifact.id}"


def write_desired(
    device: DeviceRow,
    artifact: ArtifactRow,
    *,
    rollback: bool = False,
    health: HealthPolicy | None = None,
    shadow: ArtifactRow | None = None,
    sample_rate: float = 1.0,
    now: float | None = None,
) -> DesiredState:
    """Point ``device`` at ``artifact`` (optionally shadowing ``shadow``) with a new deployment."""
    shadow_spec = None
    if shadow is not None:
        shadow_spec = ShadowSpec(
            artifact=Artifact(
                model=shadow.name,
                version=shadow.version,
                artifact_url=artifact_url(shadow),
                sha256=shadow.sha256,
                size=shadow.size,
            ),
            sample_rate=sample_rate,
        )
    desired = DesiredState(
        deployment_id=uuid.uuid4().hex,
        model=artifact.name,
        version=artifact.version,
        artifact_url=artifact_url(artifact),
        sha256=artifact.sha256,
        size=artifact.size,
        rollback=rollback,
        health=health or HealthPolicy(),
        shadow=shadow_spec,
        ts=now if now is not None else time.time(),
    )
    device.desired_model = artifact.name
    device.desired_version = artifact.version
    device.desired_artifact_id = artifact.id
    device.deployment_id = desired.deployment_id
    device.desired_at = desired.ts
    device.desired_state = encode(desired)
    return desired


def stored_desired(device: DeviceRow) -> DesiredState | None:
    if device.desired_state is None:
        return None
    return decode(DesiredState, device.desired_state)
