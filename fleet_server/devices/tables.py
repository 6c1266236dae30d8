"""ORM tables of devices and enrolment tokens.

``reported_*`` come only from the device. ``desired_state`` is the one retained desired state
of a device (the full :class:`~edgefleet.protocol.messages.DesiredState` as JSON): written by
the rollout executor (or an operator's direct assignment outside any rollout), published
retained after the commit, and republished as-is when the broker connection returns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, String, Text
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
    desired_state: Mapped[dict[str, Any] | None] = mapped_column(JsonType, deferred=True)

    deployment_phase: Mapped[str | None] = mapped_column(String(32))
    deployment_detail: Mapped[str] = mapped_column(Text, default="")
    reported_deployment_id: Mapped[str | None] = mapped_column(String(64))
    # Deferred, like desired_state: the executor loads many device rows each tick and reads
    # neither (their JSON decoding was most of a tick).
    last_telemetry: Mapped[dict[str, Any] | None] = mapped_column(JsonType, deferred=True)
    predictions_received: Mapped[int] = mapped_column(BigInteger, default=0)


class EnrolmentTokenRow(Base):
    """A token a device trades for its own credentials; stored as sha256 only."""

    __tablename__ = "enrolment_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    labels: Mapped[dict[str, Any]]
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
