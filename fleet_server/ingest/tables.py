"""ORM tables of ingested device data. Predictions are unique by (device_id, seq)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db import Base, BigId, JsonType


class PredictionRow(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_prediction_device_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    record_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    input_digest: Mapped[str] = mapped_column(String(128))
    input: Mapped[Any | None] = mapped_column(JsonType)
    output: Mapped[Any] = mapped_column(JsonType)
    latency_ms: Mapped[float] = mapped_column(Float)
    ts: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)


class TelemetryRow(Base):
    __tablename__ = "telemetry"
    __table_args__ = (
        Index("ix_telemetry_device_ts", "device_id", "ts"),
        Index("ix_telemetry_version_received", "version", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"))
    ts: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    model: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[str | None] = mapped_column(String(64))
    shadow_version: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]


class ReportRow(Base):
    """Every deployment report, in arrival order: the history behind ``deployment_phase``."""

    __tablename__ = "deployment_reports"
    __table_args__ = (Index("ix_report_device_ts", "device_id", "ts"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    ts: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
