"""``/api/v1/rollouts``: start, list, show, approve, pause, resume, abort, roll back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from fleet_server.access.tables import Role
from fleet_server.auth import Caller, OperatorCaller, Viewer, require
from fleet_server.deps import SessionDep
from fleet_server.rollouts import service
from fleet_server.rollouts.machine import DeploymentStatus, RolloutEvent
from fleet_server.rollouts.schemas import RolloutCreate, RolloutView

router = APIRouter(prefix="/rollouts", tags=["rollouts"])


def _view(session: SessionDep, rollout_id: int, *, with_devices: bool = False) -> RolloutView:
    row = service.get_rollout(session, rollout_id)
    return RolloutView.of(
        row,
        service.waves_of(session, row.id),
        service.latest_counts(session, row.id),
        service.latest_deployments(session, row.id, status=DeploymentStatus.NO_ARTIFACT),
        service.deployments_of(session, row.id) if with_devices else None,
    )


@router.post(
    "",
    status_code=201,
    responses={
        404: {"description": "No such cohort, model, version or alias."},
        409: {"description": "The cohort already has an active rollout."},
    },
)
def start_rollout(body: RolloutCreate, session: SessionDep, caller: OperatorCaller) -> RolloutView:
    """Start rolling a model version out to a cohort (or wait for approval first)."""
    row = service.start_rollout(
        session,
        cohort=body.cohort,
        model=body.model,
        version=body.version,
        strategy=body.strategy,
        health=body.health,
        require_approval=body.require_approval,
        created_by=caller.name,
    )
    session.commit()
    return _view(session, row.id)


@router.get("", dependencies=[Viewer])
def list_rollouts(session: SessionDep) -> list[RolloutView]:
    return [_view(session, row.id) for row in service.list_rollouts(session)]


@router.get("/{rollout_id}", dependencies=[Viewer], responses={404: {"description": "Unknown."}})
def show_rollout(
    rollout_id: int,
    session: SessionDep,
    devices: Annotated[bool, Query(description="Include every device deployment.")] = False,
) -> RolloutView:
    return _view(session, rollout_id, with_devices=devices)


# Who may do what: approving a rollout that waits for approval is an admin's decision (the
# operator who started it cannot approve it alone); the other actions are an operator's.
_ACTIONS = {
    "approve": (RolloutEvent.APPROVE, Role.ADMIN),
    "pause": (RolloutEvent.PAUSE, Role.OPERATOR),
    "resume": (RolloutEvent.RESUME, Role.OPERATOR),
    "abort": (RolloutEvent.ABORT, Role.OPERATOR),
    "rollback": (RolloutEvent.ROLL_BACK, Role.OPERATOR),
}


def _action(name: str, event: RolloutEvent, role: Role) -> None:
    needs_role = Depends(require(role))  # a default, as a string annotation cannot see ``role``

    def endpoint(rollout_id: int, session: SessionDep, caller: Caller = needs_role) -> RolloutView:
        service.act(session, rollout_id=rollout_id, event=event, who=caller.name)
        session.commit()
        return _view(session, rollout_id)

    endpoint.__name__ = f"{name}_rollout"
    endpoint.__doc__ = (
        f"{name.capitalize()} the rollout (needs the {role} role; 409 naming its state when not"
        " allowed)."
    )
    router.post(
        f"/{{rollout_id}}/{name}",
        responses={
            403: {"description": f"The caller's role is below {role}."},
            409: {"description": "Not allowed in the rollout's current state."},
        },
    )(endpoint)


for _name, (_event, _role) in _ACTIONS.items():
    _action(_name, _event, _role)
