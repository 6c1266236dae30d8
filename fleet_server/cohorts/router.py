"""``/api/v1/cohorts``: create, list, show."""

from __future__ import annotations

from fastapi import APIRouter

from fleet_server.auth import Operator, Viewer
from fleet_server.cohorts import service
from fleet_server.cohorts.schemas import CohortCreate, CohortView
from fleet_server.deps import SessionDep

router = APIRouter(prefix="/cohorts", tags=["cohorts"])


@router.post(
    "", status_code=201, dependencies=[Operator], responses={409: {"description": "Exists."}}
)
def create_cohort(body: CohortCreate, session: SessionDep) -> CohortView:
    """A cohort is a label selector, e.g. ``{"site": "berlin", "tier": "canary"}``."""
    row = service.create_cohort(session, name=body.name, selector=body.selector)
    devices = [device.device_id for device in service.members(session, row)]
    session.commit()
    return CohortView.of(row, devices)


@router.get("", dependencies=[Viewer])
def list_cohorts(session: SessionDep) -> list[CohortView]:
    return [
        CohortView.of(row, [d.device_id for d in service.members(session, row)])
        for row in service.list_cohorts(session)
    ]


@router.get("/{name}", dependencies=[Viewer], responses={404: {"description": "No such cohort."}})
def show_cohort(name: str, session: SessionDep) -> CohortView:
    row = service.get_cohort(session, name)
    return CohortView.of(row, [d.device_id for d in service.members(session, row)])
