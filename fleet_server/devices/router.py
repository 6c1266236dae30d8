"""``/api/v1/devices``: enrol, list, show, and set the desired model of a device."""

from __future__ import annotations

from fastapi import APIRouter

from edgefleet.protocol.messages import DesiredState
from fleet_server.auth import Operator
from fleet_server.deps import PublisherDep, SessionDep
from fleet_server.devices import service
from fleet_server.devices.schemas import DesiredRequest, DeviceCreate, DeviceCreated, DeviceView

router = APIRouter(prefix="/devices", tags=["devices"], dependencies=[Operator])


@router.post(
    "",
    status_code=201,
    responses={
        409: {"description": "Already registered."},
        422: {"description": "Unknown profile."},
    },
)
def register_device(body: DeviceCreate, session: SessionDep) -> DeviceCreated:
    """Enrol a device. The token in the answer is shown once; keep it for the agent."""
    row, token = service.register_device(
        session, device_id=body.device_id, profile=body.profile, labels=body.labels
    )
    session.commit()
    return DeviceCreated(device_id=row.device_id, token=token)


@router.get("")
def list_devices(session: SessionDep) -> list[DeviceView]:
    return [DeviceView.of(row) for row in service.list_devices(session)]


@router.get("/{device_id}", responses={404: {"description": "Not registered."}})
def show_device(device_id: str, session: SessionDep) -> DeviceView:
    return DeviceView.of(service.get_device(session, device_id))


@router.put(
    "/{device_id}/desired",
    responses={404: {"description": "No such device, or no artifact for its profile."}},
)
def set_desired(
    device_id: str, body: DesiredRequest, session: SessionDep, publisher: PublisherDep
) -> DesiredState:
    """Set the model a device should run; published retained on its ``desired`` topic."""
    desired = service.assign_desired(
        session, device_id=device_id, model=body.model, version=body.version
    )
    session.commit()
    publisher.publish_desired(device_id, desired)
    return desired
