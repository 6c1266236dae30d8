"""ORM table of cohorts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db import Base


class CohortRow(Base):
    """A named label selector; ``current_*`` is the version its devices converge to (set when
    a rollout to it succeeds); devices that join later are given that version."""

    __tablename__ = "cohorts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    selector: Mapped[dict[str, Any]]
    current_model: Mapped[str | None] = mapped_column(String(128))
    current_version: Mapped[str | None] = mapped_column(String(64))
    current_set_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
