"""HTTP shapes of rollouts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.protocol.messages import HealthPolicy
from fleet_server.rollouts.strategy import AllAtOnce, Strategy
from fleet_server.rollouts.tables import DeploymentRow, RolloutRow, WaveRow


class RolloutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cohort: str
    model: str
    version: str = Field(description="A version, or an alias such as 'production'.")
    strategy: Strategy = Field(default_factory=AllAtOnce)
    health: HealthPolicy = Field(
        default_factory=HealthPolicy, description="How each device validates before committing."
    )
    require_approval: bool = False


class WaveView(BaseModel):
    index: int
    status: str
    shadow: bool
    target_devices: int
    started_at: float | None
    settled_at: float | None
    finished_at: float | None
    metrics: dict[str, Any] | None
    gates: list[Any] | None
    detail: str

    @classmethod
    def of(cls, row: WaveRow) -> WaveView:
        return cls(
            index=row.index,
            status=row.status,
            shadow=row.shadow,
            target_devices=row.target_devices,
            started_at=row.started_at,
            settled_at=row.settled_at,
            finished_at=row.finished_at,
            metrics=row.metrics,
            gates=row.gates,
            detail=row.detail,
        )


class DeploymentView(BaseModel):
    device_id: str
    wave: int
    status: str
    deployment_id: str | None
    detail: str

    @classmethod
    def of(cls, row: DeploymentRow) -> DeploymentView:
        return cls(
            device_id=row.device_id,
            wave=row.wave_index,
            status=row.status,
            deployment_id=row.deployment_id,
            detail=row.detail,
        )


class RolloutView(BaseModel):
    id: int
    cohort: str
    model: str
    version: str
    previous_version: str | None
    status: str
    current_wave: int
    detail: str
    strategy: dict[str, Any]
    health: dict[str, Any] = Field(description="How each device validates before committing.")
    created_by: str
    created_at: float
    updated_at: float
    waves: list[WaveView]
    counts: dict[str, int] = Field(description="Latest deployment per device, by status.")
    no_artifact: list[DeploymentView] = Field(
        description="Devices left out: no artifact for their profile (reported, not broken)."
    )
    devices: list[DeploymentView] | None = None

    @classmethod
    def of(
        cls,
        row: RolloutRow,
        waves: list[WaveRow],
        counts: dict[str, int],
        no_artifact: list[DeploymentRow],
        devices: list[DeploymentRow] | None = None,
    ) -> RolloutView:
        """``counts`` and ``no_artifact`` are of each device's latest deployment (counted by
        the database: a rollout has a deployment row per device and wave)."""
        return cls(
            id=row.id,
            cohort=row.cohort,
            model=row.model,
            version=row.version,
            previous_version=row.previous_version,
            status=row.status,
            current_wave=row.current_wave,
            detail=row.detail,
            strategy=row.strategy,
            health=row.health,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            waves=[WaveView.of(w) for w in waves],
            counts=counts,
            no_artifact=[DeploymentView.of(d) for d in no_artifact],
            devices=None if devices is None else [DeploymentView.of(d) for d in devices],
        )
