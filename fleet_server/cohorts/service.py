"""Create, list and resolve cohorts. The router commits."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet_server.cohorts.tables import CohortRow
from fleet_server.devices.service import matches
from fleet_server.devices.tables import DeviceRow
from fleet_server.errors import ConflictError, NotFoundError


def create_cohort(session: Session, *, name: str, selector: dict[str, str]) -> CohortRow:
    if session.get(CohortRow, name) is not None:
        raise ConflictError(f"cohort {name!r} already exists")
    row = CohortRow(name=name, selector=dict(selector), created_at=time.time())
    session.add(row)
    session.flush()
    return row


def get_cohort(session: Session, name: str) -> CohortRow:
    row = session.get(CohortRow, name)
    if row is None:
        raise NotFoundError(f"cohort {name!r} does not exist")
    return row


def list_cohorts(session: Session) -> list[CohortRow]:
    return list(session.scalars(select(CohortRow).order_by(CohortRow.name)))


def members(session: Session, cohort: CohortRow) -> list[DeviceRow]:
    """Devices whose labels match the selector, by device id."""
    devices = session.scalars(select(DeviceRow).order_by(DeviceRow.device_id))
    return [device for device in devices if matches(device.labels, cohort.selector)]
