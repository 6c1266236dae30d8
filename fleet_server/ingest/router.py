"""``/api/v1/devices/{id}/predictions``: read back what the ingest stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.auth import Viewer
from fleet_server.deps import SessionDep
from fleet_server.devices.service import get_device
from fleet_server.ingest import service
from fleet_server.ingest.schemas import PredictionOut

router = APIRouter(tags=["ingest"], dependencies=[Viewer])


@router.get("/devices/{device_id}/predictions")
def list_predictions(
    device_id: str,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[PredictionOut]:
    """The ``limit`` most recent prediction records of a device, in seq order."""
    get_device(session, device_id)
    rows = service.list_predictions(session, device_id=device_id, limit=limit)
    return [PredictionOut.of(row) for row in rows]
