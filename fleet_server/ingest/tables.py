"""ORM tables of ingested device data. Predictions are unique by (device_id, seq); terminal
deployment reports by (device_id, outcome_key)."""

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
    """Every deployment report, in arrival order: the history behind ``deployment_phase``.

    A terminal report (committed, rolled back, failed) is stored once: agents send it again
    until the broker acknowledges it and answer every republished desired state with it, so
    after an outage the same one arrives several times. ``outcome_key`` digests its deployment,
    phase and detail (None for progress reports, which NULL keeps apart), and the unique index
    lets ingest insert it with ``ON CONFLICT DO NOTHING``: race-free under concurrent ingest on
    PostgreSQL and SQLite alike, without an index entry of unbounded detail text."""

    __tablename__ = "deployment_reports"
    __table_args__ = (
        Index("ix_report_device_ts", "device_id", "ts"),
        Index("uq_report_device_outcome", "device_id", "outcome_key", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    ts: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    outcome_key: Mapped[str | None] = mapped_column(String(64))  # terminal reports only
