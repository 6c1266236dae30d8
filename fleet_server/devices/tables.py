"""ORM table of devices. ``reported_*`` come only from the device; ``desired_*`` from operators."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db import Base, JsonType


class DeviceRow(Base):
    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile: Mapped[str] = mapped_column(String(128))
    labels: Mapped[dict[str, Any]]
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    registered_at: Mapped[float] = mapped_column(Float)

    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[float | None] = mapped_column(Float)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    reported_profile: Mapped[str | None] = mapped_column(String(128))
    reported_model: Mapped[str | None] = mapped_column(String(128))
    reported_version: Mapped[str | None] = mapped_column(String(64))

    desired_model: Mapped[str | None] = mapped_column(String(128))
    desired_version: Mapped[str | None] = mapped_column(String(64))
    desired_artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"))
    deployment_id: Mapped[str | None] = mapped_column(String(64))
    desired_at: Mapped[float | None] = mapped_column(Float)

    deployment_phase: Mapped[str | None] = mapped_column(String(32))
    deployment_detail: Mapped[str] = mapped_column(Text, default="")
    last_telemetry: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    predictions_received: Mapped[int] = mapped_column(BigInteger, default=0)
