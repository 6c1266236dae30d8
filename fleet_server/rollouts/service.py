"""Start rollouts and act on them (approve, pause, resume, abort, roll back). The router
commits; the executor does everything that touches devices."""

from __future__ import annotations

import time
from collections import Counter

from sqlalchemy import ColumnElement, Subquery, and_, func, select, tuple_
from sqlalchemy.orm import Session

from edgefleet.codec import encode
from edgefleet.protocol.messages import HealthPolicy
from fleet_server.cohorts.service import get_cohort, members
from fleet_server.errors import ConflictError, NotFoundError
from fleet_server.models.service import resolve_version
from fleet_server.rollouts.machine import (
    ACTIVE_ROLLOUT,
    WAVE_TABLE,
    DeploymentStatus,
    RolloutEvent,
    RolloutStatus,
    WaveEvent,
    WaveStatus,
    can,
    rollout_next,
    wave_next,
)
from fleet_server.rollouts.strategy import AllAtOnce, Canary, ShadowThenPromote, StrategyHolder
from fleet_server.rollouts.tables import DeploymentRow, RolloutRow, WaveRow

AnyStrategy = AllAtOnce | Canary | ShadowThenPromote


def strategy_of(rollout: RolloutRow) -> AnyStrategy:
    return StrategyHolder.model_validate({"strategy": rollout.strategy}).strategy


def start_rollout(
    session: Session,
    *,
    cohort: str,
    model: str,
    version: str,
    strategy: AnyStrategy,
    health: HealthPolicy,
    require_approval: bool,
    created_by: str,
) -> RolloutRow:
    """Create a rollout and its waves; the executor starts the first wave on its next tick."""
    cohort_row = get_cohort(session, cohort)
    resolved = resolve_version(session, model=model, version=version)
    busy = session.scalar(
        select(RolloutRow.id).where(
            RolloutRow.cohort == cohort, RolloutRow.status.in_([s.value for s in ACTIVE_ROLLOUT])
        )
    )
    if busy is not None:
        raise ConflictError(f"cohort {cohort!r} already has active rollout {busy}")
    now = time.time()
    row = RolloutRow(
        cohort=cohort,
        model=model,
        version=resolved,
        previous_version=_previous_version(session, cohort_row.name, model),
        strategy=strategy.model_dump(mode="json"),
        health=encode(health),
        status=(
            RolloutStatus.AWAITING_APPROVAL if require_approval else RolloutStatus.RUNNING
        ).value,
        current_wave=0,
        detail="",
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    for index, plan in enumerate(strategy.plan()):
        session.add(
            WaveRow(
                rollout_id=row.id,
                index=index,
                status=WaveStatus.PENDING.value,
                shadow=plan.shadow,
                target_devices=0,
                detail="",
            )
        )
    session.flush()
    return row


def _previous_version(session: Session, cohort: str, model: str) -> str | None:
    """The cohort's current version of ``model``, else what most of its devices report."""
    row = get_cohort(session, cohort)
    if row.current_model == model and row.current_version is not None:
        return row.current_version
    reported = Counter(
        device.reported_version
        for device in members(session, row)
        if device.reported_model == model and device.reported_version is not None
    )
    return reported.most_common(1)[0][0] if reported else None


def get_rollout(session: Session, rollout_id: int) -> RolloutRow:
    row = session.get(RolloutRow, rollout_id)
    if row is None:
        raise NotFoundError(f"rollout {rollout_id} does not exist")
    return row


def list_rollouts(session: Session) -> list[RolloutRow]:
    return list(session.scalars(select(RolloutRow).order_by(RolloutRow.id.desc())))


def waves_of(session: Session, rollout_id: int) -> list[WaveRow]:
    return list(
        session.scalars(
            select(WaveRow).where(WaveRow.rollout_id == rollout_id).order_by(WaveRow.index)
        )
    )


def deployments_of(session: Session, rollout_id: int) -> list[DeploymentRow]:
    return list(
        session.scalars(
            select(DeploymentRow)
            .where(DeploymentRow.rollout_id == rollout_id)
            .order_by(DeploymentRow.wave_index, DeploymentRow.device_id)
        )
    )


def _latest_wave(rollout_id: int) -> Subquery:
    """Each device's latest wave in the rollout (the deployment that counts)."""
    return (
        select(DeploymentRow.device_id, func.max(DeploymentRow.wave_index).label("wave_index"))
        .where(DeploymentRow.rollout_id == rollout_id)
        .group_by(DeploymentRow.device_id)
        .subquery()
    )


def _of_latest_wave(rollout_id: int) -> ColumnElement[bool]:
    latest = _latest_wave(rollout_id)
    return and_(
        DeploymentRow.rollout_id == rollout_id,
        tuple_(DeploymentRow.device_id, DeploymentRow.wave_index).in_(
            select(latest.c.device_id, latest.c.wave_index)
        ),
    )


def latest_counts(session: Session, rollout_id: int) -> dict[str, int]:
    """Devices by the status of their latest deployment, counted by the database."""
    rows = session.execute(
        select(DeploymentRow.status, func.count())
        .where(_of_latest_wave(rollout_id))
        .group_by(DeploymentRow.status)
    )
    return {status: count for status, count in rows}


def latest_deployments(
    session: Session, rollout_id: int, *, status: DeploymentStatus
) -> list[DeploymentRow]:
    """The devices whose latest deployment in the rollout has ``status``."""
    return list(
        session.scalars(
            select(DeploymentRow)
            .where(_of_latest_wave(rollout_id), DeploymentRow.status == status.value)
            .order_by(DeploymentRow.device_id)
        )
    )


def act(session: Session, *, rollout_id: int, event: RolloutEvent, who: str) -> RolloutRow:
    """Apply an operator's event; an illegal one raises an error naming the current state."""
    row = session.get(RolloutRow, rollout_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"rollout {rollout_id} does not exist")
    current = RolloutStatus(row.status)
    if current is RolloutStatus.SUCCEEDED and event is RolloutEvent.ROLL_BACK:
        _check_latest(session, row)
    row.status = rollout_next(current, event).value
    row.detail = f"{event.value} by {who}"
    row.updated_at = time.time()
    if event is RolloutEvent.ABORT:  # stop here: no wave runs on; devices keep what they run
        for wave in waves_of(session, row.id):
            if can(WAVE_TABLE, WaveStatus(wave.status), WaveEvent.CANCEL):
                wave.status = wave_next(WaveStatus(wave.status), WaveEvent.CANCEL).value
                wave.finished_at, wave.detail = row.updated_at, "rollout aborted"
    if event is RolloutEvent.RESUME:
        waves = waves_of(session, row.id)
        if row.current_wave < len(waves) and waves[row.current_wave].status == WaveStatus.FAILED:
            row.current_wave += 1  # the operator overrides the failed gate and goes on
    session.flush()
    return row


def _check_latest(session: Session, row: RolloutRow) -> None:
    """Only the cohort's latest rollout may be rolled back once it succeeded, only to a
    version, and only while nothing else rolls out to the cohort."""
    cohort = get_cohort(session, row.cohort)
    if (cohort.current_model, cohort.current_version) != (row.model, row.version):
        raise ConflictError(
            f"rollout {row.id} is not the latest of cohort {row.cohort!r}, which runs "
            f"{cohort.current_model} {cohort.current_version}: roll back that one instead"
        )
    later = session.scalar(  # the same version rolled out again: that one is the latest
        select(func.max(RolloutRow.id)).where(
            RolloutRow.cohort == row.cohort,
            RolloutRow.id > row.id,
            RolloutRow.status == RolloutStatus.SUCCEEDED.value,
        )
    )
    if later is not None:
        raise ConflictError(
            f"rollout {row.id} is not the latest of cohort {row.cohort!r}: rollout {later} "
            "succeeded after it; roll back that one instead"
        )
    if row.previous_version is None:
        raise ConflictError(f"rollout {row.id} has no previous version to roll back to")
    busy = session.scalar(
        select(RolloutRow.id).where(
            RolloutRow.cohort == row.cohort,
            RolloutRow.status.in_([s.value for s in ACTIVE_ROLLOUT]),
        )
    )
    if busy is not None:
        raise ConflictError(f"cohort {row.cohort!r} already has active rollout {busy}")


def active_rollout_of_device(session: Session, device_id: str) -> int | None:
    return session.scalar(
        select(RolloutRow.id)
        .join(DeploymentRow, DeploymentRow.rollout_id == RolloutRow.id)
        .where(
            DeploymentRow.device_id == device_id,
            RolloutRow.status.in_([s.value for s in ACTIVE_ROLLOUT]),
        )
        .limit(1)
    )
