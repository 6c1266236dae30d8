"""ORM tables of rollouts, their waves and one deployment per (rollout, device)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db import Base, JsonType


class RolloutRow(Base):
    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_status", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cohort: Mapped[str] = mapped_column(ForeignKey("cohorts.name"))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    strategy: Mapped[dict[str, Any]]
    health: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(32))
    current_wave: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class WaveRow(Base):
    __tablename__ = "rollout_waves"
    __table_args__ = (UniqueConstraint("rollout_id", "index", name="uq_wave_rollout_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    target_devices: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float | None] = mapped_column(Float)
    settled_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    gates: Mapped[list[Any] | None] = mapped_column(JsonType)
    detail: Mapped[str] = mapped_column(Text, default="")


class DeploymentRow(Base):
    """What one device was told in one rollout, and how it went."""

    __tablename__ = "device_deployments"
    __table_args__ = (
        UniqueConstraint(
            "rollout_id", "wave_index", "device_id", name="uq_deployment_rollout_wave_device"
        ),
        Index("ix_deployment_device", "device_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    wave_index: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"))
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"))
    deployment_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    sent_at: Mapped[float | None] = mapped_column(Float)
    settled_at: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, default="")
