"""ORM tables of the registry: one verified bundle tar per (model, version, profile), and
aliases (``production``, ``staging``...) that name one version of a model."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Float, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db import Base


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("name", "version", "profile", name="uq_artifact_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(128))
    precision: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]]
    uploaded_at: Mapped[float] = mapped_column(Float)


class AliasRow(Base):
    __tablename__ = "model_aliases"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[float] = mapped_column(Float)
