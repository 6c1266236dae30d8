"""HTTP shapes of the devices domain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgefleet.protocol.topics import TopicError, validate_device_id
from fleet_server.devices.tables import DeviceRow


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    profile: str = Field(description="Hardware profile tag, e.g. raspberry-pi/4b.")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        try:
            return validate_device_id(value)
        except TopicError as exc:
            raise ValueError(str(exc)) from exc


class EnrolmentTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    labels: dict[str, str] = Field(default_factory=dict, description="Given to every device.")
    max_uses: int | None = Field(default=None, ge=1)
    ttl_s: float | None = Field(default=None, gt=0)


class EnrolmentTokenCreated(BaseModel):
    name: str
    token: str = Field(description="Shown once; give it to the devices to enrol.")
    expires_at: float | None
    max_uses: int | None


class LabelsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class DeviceCreated(BaseModel):
    device_id: str
    token: str = Field(description="Shown once; the server keeps only its sha256.")


class DesiredRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    version: str


class DeviceView(BaseModel):
    """A device as the operator sees it. ``reported_*`` are only ever what the device said."""

    device_id: str
    profile: str
    labels: dict[str, str]
    online: bool
    last_seen: float | None = Field(
        description="When the server last heard from the device (unix s); written at most "
        "every few seconds (ingest holds back activity-only updates), so up to ~5 s old."
    )
    reported_model: str | None
    reported_version: str | None
    desired_model: str | None
    desired_version: str | None
    deployment_phase: str | None
    deployment_detail: str
    last_telemetry: dict[str, Any] | None = Field(
        description="The latest telemetry the device sent, up to ~5 s old like last_seen."
    )
    predictions_received: int

    @classmethod
    def of(cls, row: DeviceRow) -> DeviceView:
        return cls(
            device_id=row.device_id,
            profile=row.profile,
            labels={str(k): str(v) for k, v in row.labels.items()},
            online=row.online,
            last_seen=row.last_seen,
            reported_model=row.reported_model,
            reported_version=row.reported_version,
            desired_model=row.desired_model,
            desired_version=row.desired_version,
            deployment_phase=row.deployment_phase,
            deployment_detail=row.deployment_detail,
            last_telemetry=row.last_telemetry,
            predictions_received=row.predictions_received,
        )
