"""``/api/v1/rollouts``: start, list, show, approve, pause, resume, abort, roll back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.auth import OperatorCaller, Viewer
from fleet_server.deps import SessionDep
from fleet_server.rollouts import service
from fleet_server.rollouts.machine import RolloutEvent
from fleet_server.rollouts.schemas import RolloutCreate, RolloutView

router = APIRouter(prefix="/rollouts", tags=["rollouts"])


def _view(session: SessionDep, rollout_id: int, *, with_devices: bool = False) -> RolloutView:
    row = service.get_rollout(session, rollout_id)
    return RolloutView.of(
        row,
        service.waves_of(session, row.id),
        service.deployments_of(session, row.id),
        with_devices=with_devices,
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


_ACTIONS = {
    "approve": RolloutEvent.APPROVE,
    "pause": RolloutEvent.PAUSE,
    "resume": RolloutEvent.RESUME,
    "abort": RolloutEvent.ABORT,
    "rollback": RolloutEvent.ROLL_BACK,
}


def _action(name: str, event: RolloutEvent) -> None:
    def endpoint(rollout_id: int, session: SessionDep, caller: OperatorCaller) -> RolloutView:
        service.act(session, rollout_id=rollout_id, event=event, who=caller.name)
        session.commit()
        return _view(session, rollout_id)

    endpoint.__name__ = f"{name}_rollout"
    endpoint.__doc__ = f"{name.capitalize()} the rollout (409 naming its state when not allowed)."
    router.post(
        f"/{{rollout_id}}/{name}",
        responses={409: {"description": "Not allowed in the rollout's current state."}},
    )(endpoint)


for _name, _event in _ACTIONS.items():
    _action(_name, _event)
