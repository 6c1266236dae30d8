"""``/api/v1/devices``: enrol, list, show, label, and set the desired model of a device;
``/api/v1/enrolment-tokens`` and ``/api/v1/enrol`` for self-enrolment."""

from __future__ import annotations

from fastapi import APIRouter

from edgefleet.protocol.messages import DesiredState
from fleet_server.auth import BearerToken, Operator, Viewer, token_of
from fleet_server.deps import PublisherDep, SessionDep
from fleet_server.devices import service
from fleet_server.devices.schemas import (
    DesiredRequest,
    DeviceCreate,
    DeviceCreated,
    DeviceView,
    EnrolmentTokenCreate,
    EnrolmentTokenCreated,
    LabelsPatch,
)

router = APIRouter(prefix="/devices", tags=["devices"])
enrolment_router = APIRouter(tags=["devices"])


@router.post(
    "",
    status_code=201,
    dependencies=[Operator],
    responses={
        409: {"description": "Already registered."},
        422: {"description": "Unknown profile."},
    },
)
def register_device(body: DeviceCreate, session: SessionDep) -> DeviceCreated:
    """Enrol a device by hand. The token in the answer is shown once; keep it for the agent."""
    row, token = service.register_device(
        session, device_id=body.device_id, profile=body.profile, labels=body.labels
    )
    session.commit()
    return DeviceCreated(device_id=row.device_id, token=token)


@router.get("", dependencies=[Viewer])
def list_devices(session: SessionDep) -> list[DeviceView]:
    return [DeviceView.of(row) for row in service.list_devices(session)]


@router.get("/{device_id}", dependencies=[Viewer], responses={404: {"description": "Unknown."}})
def show_device(device_id: str, session: SessionDep) -> DeviceView:
    return DeviceView.of(service.get_device(session, device_id))


@router.patch("/{device_id}/labels", dependencies=[Operator])
def patch_labels(device_id: str, body: LabelsPatch, session: SessionDep) -> DeviceView:
    """Set and remove labels; cohort membership follows the labels."""
    row = service.update_labels(
        session, device_id=device_id, set_labels=body.set, remove=body.remove
    )
    session.commit()
    return DeviceView.of(row)


@router.put(
    "/{device_id}/desired",
    dependencies=[Operator],
    responses={
        404: {"description": "No such device, or no artifact for its profile."},
        409: {"description": "An active rollout holds the device."},
    },
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


@enrolment_router.post("/enrolment-tokens", status_code=201, dependencies=[Operator])
def create_enrolment_token(
    body: EnrolmentTokenCreate, session: SessionDep
) -> EnrolmentTokenCreated:
    """A token that devices trade for their own credentials at ``POST /enrol``."""
    row, token = service.create_enrolment_token(
        session, name=body.name, labels=body.labels, max_uses=body.max_uses, ttl_s=body.ttl_s
    )
    session.commit()
    return EnrolmentTokenCreated(
        name=row.name, token=token, expires_at=row.expires_at, max_uses=row.max_uses
    )


@enrolment_router.post(
    "/enrol",
    status_code=201,
    responses={401: {"description": "Invalid, expired or used-up enrolment token."}},
)
def enrol(body: DeviceCreate, credentials: BearerToken, session: SessionDep) -> DeviceCreated:
    """Self-enrolment: ``Authorization: Bearer <enrolment token>``; answers the device token."""
    row, token = service.enrol_device(
        session,
        enrolment_token=token_of(credentials),
        device_id=body.device_id,
        profile=body.profile,
        labels=body.labels,
    )
    session.commit()
    return DeviceCreated(device_id=row.device_id, token=token)
