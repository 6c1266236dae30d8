"""The rollout executor: a periodic, idempotent tick that advances every rollout.

Each tick reads the state from the database, moves rollouts, waves and device deployments
through their tables (:mod:`.machine`), commits, and only then publishes the desired states it
wrote (retained, so a crash between commit and publish is repaired when the bridge republishes
every desired state on reconnect). Running a tick twice changes nothing the second time, so a
server restarted mid-rollout simply carries on.

Write transactions are kept short, because MQTT ingest writes the same device rows (and on
SQLite waits for the one write lock):

- each rollout is advanced and committed in its own transaction, and the reconcile pass
  (stragglers, devices that joined a cohort) runs in one more;
- the telemetry a baked wave's gates read is read and summarized *before* that rollout's write
  transaction, in a read-only session (:func:`_read_telemetry`): decoding payloads is the slow
  part of a tick;
- device rows are row-locked (:func:`_lock_devices`) only once the tick knows which ones it
  will point at a new desired state, and only those, right before it writes them.

Only one executor ticks at a time: on PostgreSQL it holds ``pg_try_advisory_lock`` for the
tick (another server process skips the tick); on SQLite, one server process is assumed and a
thread lock suffices.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgefleet.codec import decode
from edgefleet.protocol.messages import DeploymentPhase, DesiredState, HealthPolicy
from fleet_server.cohorts.service import members
from fleet_server.cohorts.tables import CohortRow
from fleet_server.devices.desired import write_desired
from fleet_server.devices.service import matches
from fleet_server.devices.tables import DeviceRow
from fleet_server.ingest.tables import TelemetryRow
from fleet_server.models.semver import sort_key
from fleet_server.models.service import artifact_for
from fleet_server.models.tables import ArtifactRow
from fleet_server.mqtt.publisher import Publisher
from fleet_server.rollouts.machine import (
    ACTIVE_ROLLOUT,
    SETTLED,
    DeploymentEvent,
    DeploymentStatus,
    RolloutEvent,
    RolloutStatus,
    WaveEvent,
    WaveStatus,
    deployment_next,
    rollout_next,
    wave_next,
)
from fleet_server.rollouts.metrics import BASELINE_LOOKBACK_S, WaveMetrics, drift_score, summarize
from fleet_server.rollouts.service import strategy_of
from fleet_server.rollouts.strategy import Action, WavePlan
from fleet_server.rollouts.tables import DeploymentRow, RolloutRow, WaveRow

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x6564676566  # "edgef"
RECONCILE_S = 1.0


def lock_key(schema: str) -> int:
    """The advisory lock of the executors of one schema (locks are per database, and several
    fleets may share a database in different schemas)."""
    return ADVISORY_LOCK_KEY ^ zlib.crc32(schema.encode())


_CHUNK = 500  # device ids per IN (...) list
_OPEN = (DeploymentStatus.SENT, DeploymentStatus.TIMED_OUT, DeploymentStatus.ROLLING_BACK)
_FAIL_PHASES = (DeploymentPhase.FAILED.value, DeploymentPhase.ROLLED_BACK.value)

Outbox = list[tuple[str, DesiredState]]


@dataclass(frozen=True)
class _Telemetry:
    """The telemetry part of a baked wave's metrics, read before the write transaction; it
    belongs to the wave that was started at ``started_at``."""

    wave_index: int
    started_at: float
    metrics: WaveMetrics


@dataclass
class _Tick:
    session: Session
    now: float
    telemetry: _Telemetry | None = None
    outbox: Outbox = field(default_factory=list)
    devices: dict[str, DeviceRow] = field(default_factory=dict)

    def device(self, device_id: str) -> DeviceRow:
        if device_id not in self.devices:
            row = self.session.get(DeviceRow, device_id)
            assert row is not None
            self.devices[device_id] = row
        return self.devices[device_id]

    def tell(self, device: DeviceRow, desired: DesiredState) -> None:
        # One desired state per device per tick: a later write in the same tick replaces it.
        self.outbox = [item for item in self.outbox if item[0] != device.device_id]
        self.outbox.append((device.device_id, desired))


class Executor:
    def __init__(
        self,
        *,
        engine: Engine,
        sessions: sessionmaker[Session],
        publisher: Publisher,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._publisher = publisher
        self.interval_s = interval_s
        self._clock = clock
        self._local_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self._next_reconcile = 0.0
        self._lock_key: int | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgefleet-rollouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except SQLAlchemyError:
                log.exception("database error in the rollout executor; retrying next tick")
            except Exception:  # the executor must outlive one bad tick
                log.exception("unexpected error in the rollout executor; retrying next tick")

    def tick(self) -> bool:
        """Advance every rollout once. False when another executor holds the lock."""
        with self._local_lock:
            if self._engine.dialect.name != "postgresql":
                self._tick_once()
                return True
            with self._engine.connect() as lock_connection:
                if self._lock_key is None:
                    schema = lock_connection.scalar(text("SELECT current_schema()")) or ""
                    self._lock_key = lock_key(str(schema))
                got = lock_connection.scalar(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self._lock_key}
                )
                lock_connection.commit()
                if not got:
                    return False
                try:
                    self._tick_once()
                finally:
                    lock_connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": self._lock_key}
                    )
                    lock_connection.commit()
            return True

    def _tick_once(self) -> None:
        now = self._clock()
        with self._sessions() as session:
            rollout_ids = session.scalars(
                select(RolloutRow.id)
                .where(RolloutRow.status.in_([s.value for s in ACTIVE_ROLLOUT]))
                .order_by(RolloutRow.id)
            ).all()
        for rollout_id in rollout_ids:
            with self._sessions() as session:  # read-only: no lock is taken or held
                telemetry = _read_telemetry(session, rollout_id, now)
            self._commit(_Tick(self._sessions(), now, telemetry), rollout_id)
        if now >= self._next_reconcile:
            # Scans every device: at most once per RECONCILE_S.
            self._commit(_Tick(self._sessions(), now), None)
            self._next_reconcile = now + RECONCILE_S
        self.ticks += 1

    def _commit(self, tick: _Tick, rollout_id: int | None) -> None:
        """Advance one rollout (``None``: the reconcile pass) in one transaction, commit, and
        only then publish what it wrote."""
        with tick.session:
            if rollout_id is None:
                _sync_stragglers(tick)
                _reconcile_cohorts(tick)
            else:
                rollout = tick.session.get(RolloutRow, rollout_id)
                if rollout is not None and RolloutStatus(rollout.status) in ACTIVE_ROLLOUT:
                    _advance(tick, rollout)
            tick.session.commit()
        for device_id, desired in tick.outbox:
            self._publisher.publish_desired(device_id, desired)


# -- one rollout -----------------------------------------------------------------------------


def _advance(tick: _Tick, rollout: RolloutRow) -> None:
    status = RolloutStatus(rollout.status)
    if status is RolloutStatus.AWAITING_APPROVAL:
        return
    plans = strategy_of(rollout).plan()
    waves = list(
        tick.session.scalars(
            select(WaveRow).where(WaveRow.rollout_id == rollout.id).order_by(WaveRow.index)
        )
    )
    deployments = list(
        tick.session.scalars(select(DeploymentRow).where(DeploymentRow.rollout_id == rollout.id))
    )
    _sync_deployments(tick, rollout, plans, deployments)
    if status is RolloutStatus.ROLLING_BACK:
        _roll_back(tick, rollout, plans, waves, deployments)
        return
    if status is not RolloutStatus.RUNNING:
        return
    if rollout.current_wave >= len(waves):
        _complete(tick, rollout)
        return
    wave, plan = waves[rollout.current_wave], plans[rollout.current_wave]
    wave_status = WaveStatus(wave.status)
    if wave_status is WaveStatus.PENDING:
        _start_wave(tick, rollout, wave, plan, deployments)
        return
    if wave_status not in (WaveStatus.RUNNING, WaveStatus.BAKING):
        return
    mine = [d for d in deployments if d.wave_index == wave.index]
    # Device counts every tick (abort conditions); telemetry only once the bake is over. The
    # telemetry was read before this transaction: a wave that was not baked then (or was
    # changed since) is judged on the next tick.
    assert wave.started_at is not None
    telemetry = tick.telemetry
    baked = (
        _baked(wave, plan, tick.now)
        and telemetry is not None
        and (telemetry.wave_index, telemetry.started_at) == (wave.index, wave.started_at)
    )
    metrics = _measure(mine, telemetry.metrics if baked and telemetry else None)
    wave.metrics = metrics.as_dict()
    fired = [r for r in (c.check(metrics) for c in plan.gates.abort) if r.ok]
    if fired:
        wave.gates = [r.as_dict() for r in fired]
        _finish_wave(tick, wave, WaveEvent.FAIL, "abort: " + "; ".join(r.detail for r in fired))
        _act(tick, rollout, Action.ROLL_BACK, f"wave {wave.index + 1} aborted ({fired[0].gate})")
        return
    if wave_status is WaveStatus.RUNNING:
        if all(DeploymentStatus(d.status) in SETTLED for d in mine):
            wave.status = wave_next(wave_status, WaveEvent.SETTLE).value
            wave.settled_at = tick.now
        return
    if not baked:
        return
    results = [condition.check(metrics) for condition in plan.gates.success]
    wave.gates = [r.as_dict() for r in results]
    failed = [r for r in results if not r.ok]
    if failed:
        _finish_wave(tick, wave, WaveEvent.FAIL, "; ".join(f"{r.gate}: {r.detail}" for r in failed))
        _act(tick, rollout, plan.gates.on_failure, f"wave {wave.index + 1} failed its gates")
        return
    _finish_wave(tick, wave, WaveEvent.PASS, "gates passed")
    rollout.current_wave += 1
    rollout.updated_at = tick.now
    if rollout.current_wave >= len(waves):
        _complete(tick, rollout)
    elif plan.gates.on_success is Action.PAUSE:
        _act(tick, rollout, Action.PAUSE, f"wave {wave.index + 1} passed; paused as planned")


def _finish_wave(tick: _Tick, wave: WaveRow, event: WaveEvent, detail: str) -> None:
    wave.status = wave_next(WaveStatus(wave.status), event).value
    wave.finished_at = tick.now
    wave.detail = detail


def _act(tick: _Tick, rollout: RolloutRow, action: Action, detail: str) -> None:
    event = RolloutEvent.ROLL_BACK if action is Action.ROLL_BACK else RolloutEvent.PAUSE
    rollout.status = rollout_next(RolloutStatus(rollout.status), event).value
    rollout.detail = detail
    rollout.updated_at = tick.now
    log.info("rollout %d: %s -> %s (%s)", rollout.id, event.value, rollout.status, detail)


def _complete(tick: _Tick, rollout: RolloutRow) -> None:
    rollout.status = rollout_next(RolloutStatus(rollout.status), RolloutEvent.COMPLETE).value
    rollout.detail = f"{rollout.model} {rollout.version} rolled out"
    rollout.updated_at = tick.now
    cohort = tick.session.get(CohortRow, rollout.cohort)
    assert cohort is not None
    cohort.current_model, cohort.current_version = rollout.model, rollout.version
    cohort.current_set_at = tick.now
    log.info("rollout %d succeeded: cohort %s runs %s", rollout.id, cohort.name, rollout.version)


# -- waves -----------------------------------------------------------------------------------


def _baked(wave: WaveRow, plan: WavePlan, now: float) -> bool:
    return (
        WaveStatus(wave.status) is WaveStatus.BAKING and now >= (wave.settled_at or 0) + plan.bake_s
    )


def _lock_devices(session: Session, device_ids: Iterable[str]) -> list[DeviceRow]:
    """The devices the tick is about to write, row-locked in device id order on PostgreSQL
    (the MQTT ingest locks them in the same order, so the two wait for each other instead of
    deadlocking) and reloaded as locked. ``FOR NO KEY UPDATE``: ingest's inserts of telemetry
    and reports, whose foreign keys take ``KEY SHARE`` on the device row, do not wait for the
    tick. The locks are held until the commit, so lock only right before the writes."""
    ids = sorted(set(device_ids))
    locked: list[DeviceRow] = []
    for start in range(0, len(ids), _CHUNK):
        locked.extend(
            session.scalars(
                select(DeviceRow)
                .where(DeviceRow.device_id.in_(ids[start : start + _CHUNK]))
                .order_by(DeviceRow.device_id)
                .with_for_update(key_share=True)
                .execution_options(populate_existing=True)
            )
        )
    return locked


def _order_key(rollout_id: int, device_id: str) -> str:
    return hashlib.sha256(f"{rollout_id}:{device_id}".encode()).hexdigest()


def _held_elsewhere(tick: _Tick, rollout_id: int) -> set[str]:
    rows = tick.session.execute(
        select(DeploymentRow.device_id)
        .join(RolloutRow, RolloutRow.id == DeploymentRow.rollout_id)
        .where(
            RolloutRow.id != rollout_id,
            RolloutRow.status.in_([s.value for s in ACTIVE_ROLLOUT]),
        )
    )
    return {device_id for (device_id,) in rows}


def _start_wave(
    tick: _Tick,
    rollout: RolloutRow,
    wave: WaveRow,
    plan: WavePlan,
    deployments: list[DeploymentRow],
) -> None:
    cohort = tick.session.get(CohortRow, rollout.cohort)
    assert cohort is not None
    held = _held_elsewhere(tick, rollout.id)
    devices = [
        d
        for d in tick.session.scalars(select(DeviceRow))
        if matches(d.labels, cohort.selector) and d.device_id not in held
    ]
    devices.sort(key=lambda d: _order_key(rollout.id, d.device_id))
    plans = strategy_of(rollout).plan()
    same_kind = {d.device_id for d in deployments if plans[d.wave_index].shadow == plan.shadow}
    target = plan.size.devices(len(devices))
    chosen = [d for d in devices if d.device_id not in same_kind][: max(0, target - len(same_kind))]
    _lock_devices(tick.session, [d.device_id for d in chosen])  # reloads them, as locked
    health = decode(HealthPolicy, rollout.health)
    latest = _latest_by_device(deployments)
    for device in chosen:
        previous = latest.get(device.device_id)
        if previous is not None and DeploymentStatus(previous.status) in (
            DeploymentStatus.SUCCEEDED,
            DeploymentStatus.FAILED,
            DeploymentStatus.TIMED_OUT,
        ):
            previous.status = deployment_next(
                DeploymentStatus(previous.status), DeploymentEvent.SUPERSEDE
            ).value
        tick.session.add(_deploy(tick, rollout, wave, plan, device, health))
    wave.status = wave_next(WaveStatus(wave.status), WaveEvent.START).value
    wave.started_at = tick.now
    wave.target_devices = len(chosen)
    wave.detail = f"{len(chosen)} device(s) of {len(devices)} in the cohort"
    rollout.updated_at = tick.now
    log.info("rollout %d: wave %d started on %d device(s)", rollout.id, wave.index + 1, len(chosen))


def _deploy(
    tick: _Tick,
    rollout: RolloutRow,
    wave: WaveRow,
    plan: WavePlan,
    device: DeviceRow,
    health: HealthPolicy,
) -> DeploymentRow:
    artifact = artifact_for(
        tick.session, model=rollout.model, version=rollout.version, profile=device.profile
    )
    row = DeploymentRow(
        rollout_id=rollout.id,
        wave_index=wave.index,
        device_id=device.device_id,
        artifact_id=artifact.id if artifact else None,
        status=DeploymentStatus.NO_ARTIFACT.value,
        settled_at=tick.now,
        detail="",
    )
    if artifact is None:
        row.detail = f"no artifact of {rollout.model} {rollout.version} for {device.profile}"
        return row
    if plan.shadow:
        current = tick.session.get(ArtifactRow, device.desired_artifact_id or -1)
        if current is None:
            row.detail = "nothing running to shadow: no current desired model"
            return row
        sample = _sample_rate(rollout)
        desired = write_desired(
            device, current, health=health, shadow=artifact, sample_rate=sample, now=tick.now
        )
    else:
        desired = write_desired(device, artifact, health=health, now=tick.now)
    row.status = DeploymentStatus.SENT.value
    row.deployment_id = desired.deployment_id
    row.sent_at, row.settled_at = tick.now, None
    tick.tell(device, desired)
    return row


def _sample_rate(rollout: RolloutRow) -> float:
    strategy = strategy_of(rollout)
    return getattr(strategy, "sample_rate", 1.0)


def _latest_by_device(deployments: list[DeploymentRow]) -> dict[str, DeploymentRow]:
    latest: dict[str, DeploymentRow] = {}
    for row in sorted(deployments, key=lambda r: r.wave_index):
        latest[row.device_id] = row
    return latest


# -- device deployments ----------------------------------------------------------------------


def _sync_deployments(
    tick: _Tick, rollout: RolloutRow, plans: list[WavePlan], deployments: list[DeploymentRow]
) -> None:
    """Move open deployments on what the devices reported, and time out the silent ones."""
    open_ids = [r.device_id for r in deployments if DeploymentStatus(r.status) in _OPEN]
    missing = [d for d in open_ids if d not in tick.devices]
    for start in range(0, len(missing), _CHUNK):
        chunk = missing[start : start + _CHUNK]
        for device in tick.session.scalars(select(DeviceRow).where(DeviceRow.device_id.in_(chunk))):
            tick.devices[device.device_id] = device
    for row in deployments:
        status = DeploymentStatus(row.status)
        if status not in _OPEN:
            continue
        device = tick.device(row.device_id)
        plan = plans[min(row.wave_index, len(plans) - 1)]
        event: DeploymentEvent | None = None
        if status is DeploymentStatus.ROLLING_BACK:
            if rollout.previous_version is not None and (
                device.reported_version == rollout.previous_version
            ):
                event = DeploymentEvent.REVERTED
            elif (
                device.reported_deployment_id == row.deployment_id
                and device.deployment_phase == DeploymentPhase.FAILED.value
            ):
                event = DeploymentEvent.FAIL
        elif device.reported_deployment_id == row.deployment_id:
            phase = device.deployment_phase
            if phase == DeploymentPhase.COMMITTED.value or (
                plan.shadow and phase == DeploymentPhase.ACTIVE.value
            ):
                event = DeploymentEvent.COMMIT
            elif phase in _FAIL_PHASES:
                event = DeploymentEvent.FAIL
        if (
            event is None
            and status is DeploymentStatus.SENT
            and row.sent_at is not None
            and tick.now >= row.sent_at + plan.timeout_s
        ):
            event = DeploymentEvent.TIMEOUT
        if event is None:
            continue
        row.status = deployment_next(status, event).value
        if event is not DeploymentEvent.TIMEOUT:
            row.settled_at = tick.now
        else:
            row.settled_at = tick.now
            row.detail = f"no outcome within {plan.timeout_s:g}s; converges when it returns"
        if event is DeploymentEvent.FAIL:
            row.detail = device.deployment_detail or "the device reported a failure"


def _sync_stragglers(tick: _Tick) -> None:
    """A device that timed out in a rollout that has since finished, or was still installing
    when its rollout was aborted, still converges (its desired state is retained): record its
    outcome when it reports."""
    rows = tick.session.execute(
        select(DeploymentRow, DeviceRow)
        .join(RolloutRow, RolloutRow.id == DeploymentRow.rollout_id)
        .join(DeviceRow, DeviceRow.device_id == DeploymentRow.device_id)
        .where(
            DeploymentRow.status.in_(
                [DeploymentStatus.TIMED_OUT.value, DeploymentStatus.SENT.value]
            ),
            RolloutRow.status.in_([RolloutStatus.SUCCEEDED.value, RolloutStatus.ABORTED.value]),
            DeviceRow.reported_deployment_id == DeploymentRow.deployment_id,
        )
    )
    for row, device in rows:
        if device.deployment_phase == DeploymentPhase.COMMITTED.value:
            event = DeploymentEvent.COMMIT
        elif device.deployment_phase in _FAIL_PHASES:
            event = DeploymentEvent.FAIL
        else:
            continue
        status = DeploymentStatus(row.status)
        row.status = deployment_next(status, event).value
        row.settled_at = tick.now
        row.detail = (
            ("converged after the wave" if status is DeploymentStatus.TIMED_OUT else "")
            if event is DeploymentEvent.COMMIT
            else (device.deployment_detail or "the device reported a failure")
        )


def _kept_after_abort(tick: _Tick) -> set[str]:
    """Devices whose desired state is still the one an aborted rollout gave them: an abort
    stops the rollout where it is, and they keep that version until the next rollout."""
    rows = tick.session.execute(
        select(DeploymentRow.device_id)
        .join(RolloutRow, RolloutRow.id == DeploymentRow.rollout_id)
        .join(DeviceRow, DeviceRow.deployment_id == DeploymentRow.deployment_id)
        .where(RolloutRow.status == RolloutStatus.ABORTED.value)
    )
    return {device_id for (device_id,) in rows}


def _roll_back(
    tick: _Tick,
    rollout: RolloutRow,
    plans: list[WavePlan],
    waves: list[WaveRow],
    deployments: list[DeploymentRow],
) -> None:
    for wave in waves:
        if WaveStatus(wave.status) in (WaveStatus.PENDING, WaveStatus.RUNNING, WaveStatus.BAKING):
            _finish_wave(tick, wave, WaveEvent.CANCEL, "rollout rolled back")
    health = decode(HealthPolicy, rollout.health)
    latest = _latest_by_device(deployments)
    to_revert = [
        row
        for row in latest.values()
        if DeploymentStatus(row.status)
        in (
            DeploymentStatus.SENT,
            DeploymentStatus.SUCCEEDED,
            DeploymentStatus.FAILED,
            DeploymentStatus.TIMED_OUT,
        )
    ]
    _lock_devices(tick.session, [row.device_id for row in to_revert])
    for row in to_revert:
        status = DeploymentStatus(row.status)
        device = tick.device(row.device_id)
        target = (
            artifact_for(
                tick.session,
                model=rollout.model,
                version=rollout.previous_version,
                profile=device.profile,
            )
            if rollout.previous_version is not None
            else None
        )
        row.status = deployment_next(status, DeploymentEvent.ROLL_BACK).value
        row.sent_at, row.settled_at = tick.now, None
        if target is None:
            row.detail = "no previous version to roll back to; the device keeps its model"
            continue
        desired = write_desired(device, target, rollback=True, health=health, now=tick.now)
        row.deployment_id = desired.deployment_id
        row.detail = f"rollback to {target.version} sent"
        tick.tell(device, desired)
    timeout = max((p.timeout_s for p in plans), default=600.0)
    waiting = [
        r
        for r in deployments
        if DeploymentStatus(r.status) is DeploymentStatus.ROLLING_BACK
        and r.sent_at is not None
        and tick.now < r.sent_at + timeout
        and r.detail.startswith("rollback to")
    ]
    if not waiting:
        rollout.status = rollout_next(RolloutStatus.ROLLING_BACK, RolloutEvent.REVERTED).value
        rollout.updated_at = tick.now
        cohort = tick.session.get(CohortRow, rollout.cohort)
        assert cohort is not None
        if rollout.previous_version is not None and (
            cohort.current_model,
            cohort.current_version,
        ) == (rollout.model, rollout.version):
            # A rollout that had succeeded: the cohort runs the previous version again, so
            # devices that joined it since are taken back too (``_reconcile_cohorts``).
            cohort.current_version, cohort.current_set_at = rollout.previous_version, tick.now
        log.info("rollout %d rolled back", rollout.id)


# -- metrics ---------------------------------------------------------------------------------


def _measure(mine: list[DeploymentRow], telemetry: WaveMetrics | None) -> WaveMetrics:
    """The wave's device counts, with the telemetry part from ``telemetry`` when given."""
    metrics = WaveMetrics(targeted=len(mine))
    if telemetry is not None:
        for name in _TELEMETRY_FIELDS:
            setattr(metrics, name, getattr(telemetry, name))
    for row in mine:
        status = DeploymentStatus(row.status)
        if status is DeploymentStatus.NO_ARTIFACT:
            continue
        metrics.with_artifact += 1
        metrics.installed += status is DeploymentStatus.SUCCEEDED
        metrics.failed += status is DeploymentStatus.FAILED
        metrics.timed_out += status is DeploymentStatus.TIMED_OUT
    return metrics


_TELEMETRY_FIELDS = (
    "requests",
    "errors",
    "nan_outputs",
    "p95_ms",
    "shadow_compared",
    "shadow_agreement",
    "baseline_p95_ms",
    "drift",
)


def _read_telemetry(session: Session, rollout_id: int, now: float) -> _Telemetry | None:
    """The telemetry part of the metrics of ``rollout_id``'s current wave if its bake is over
    (else None): read and decoded before the write transaction, which holds locks."""
    rollout = session.get(RolloutRow, rollout_id)
    if rollout is None or RolloutStatus(rollout.status) is not RolloutStatus.RUNNING:
        return None
    plans = strategy_of(rollout).plan()
    wave = session.scalar(
        select(WaveRow).where(
            WaveRow.rollout_id == rollout_id, WaveRow.index == rollout.current_wave
        )
    )
    if wave is None or wave.started_at is None or wave.index >= len(plans):
        return None
    if not _baked(wave, plans[wave.index], now):
        return None
    metrics = WaveMetrics()
    ids = list(
        session.scalars(
            select(DeploymentRow.device_id).where(
                DeploymentRow.rollout_id == rollout_id, DeploymentRow.wave_index == wave.index
            )
        )
    )
    since = wave.started_at
    if wave.shadow:
        new_rows = _telemetry(session, ids, since=since, version=None, shadow=rollout.version)
        new = summarize(new_rows, shadow_version=rollout.version)
    else:
        new_rows = _telemetry(session, ids, since=since, version=rollout.version, shadow=None)
        new = summarize(new_rows)
    metrics.requests, metrics.errors, metrics.nan_outputs = (
        new.requests,
        new.errors,
        new.nan_outputs,
    )
    metrics.p95_ms = new.p95_ms
    metrics.shadow_compared, metrics.shadow_agreement = new.shadow_compared, new.shadow_agreement
    if rollout.previous_version is not None and not wave.shadow:
        cohort = session.get(CohortRow, rollout.cohort)
        assert cohort is not None
        base_rows = _telemetry(  # the cohort's own devices: not the rest of the fleet
            session,
            [device.device_id for device in members(session, cohort)],
            since=rollout.created_at - BASELINE_LOOKBACK_S,
            version=rollout.previous_version,
            shadow=None,
            model=rollout.model,
        )
        base = summarize(base_rows)
        metrics.baseline_p95_ms = base.p95_ms
        metrics.drift = drift_score(new, base)
    return _Telemetry(wave.index, wave.started_at, metrics)


def _telemetry(
    session: Session,
    device_ids: list[str] | None,
    *,
    since: float,
    version: str | None,
    shadow: str | None,
    model: str | None = None,
) -> list[dict[str, object]]:
    query = select(TelemetryRow.payload).where(TelemetryRow.received_at >= since)
    if device_ids is not None:
        if not device_ids:
            return []
        query = query.where(TelemetryRow.device_id.in_(device_ids))
    if version is not None:
        query = query.where(TelemetryRow.version == version)
    if model is not None:
        query = query.where(TelemetryRow.model == model)
    if shadow is not None:
        query = query.where(TelemetryRow.shadow_version == shadow)
    return [dict(payload) for payload in session.scalars(query)]


# -- devices that join a cohort later --------------------------------------------------------


def _reconcile_cohorts(tick: _Tick) -> None:
    """Give every device its cohort's current version, unless an active rollout holds it or
    an aborted one left it on its version.

    A device in several cohorts follows the one whose current version was set last.
    """
    cohorts = [
        c
        for c in tick.session.scalars(
            select(CohortRow).where(CohortRow.current_version.is_not(None))
        )
    ]
    if not cohorts:
        return
    busy_cohorts = set(
        tick.session.scalars(
            select(RolloutRow.cohort).where(
                RolloutRow.status.in_([s.value for s in ACTIVE_ROLLOUT])
            )
        )
    )
    held = _held_elsewhere(tick, -1) | _kept_after_abort(tick)
    cohorts.sort(key=lambda c: c.current_set_at or 0.0)

    def behind(device: DeviceRow) -> CohortRow | None:
        """The cohort whose current version ``device`` should be given, if any."""
        if device.device_id in held:
            return None
        winner = None
        for cohort in cohorts:
            if matches(device.labels, cohort.selector):
                winner = cohort
        if winner is None or winner.name in busy_cohorts:
            return None
        if (device.desired_model, device.desired_version) == (
            winner.current_model,
            winner.current_version,
        ):
            return None
        return winner

    def target(device: DeviceRow) -> tuple[CohortRow, ArtifactRow] | None:
        winner = behind(device)
        if winner is None:
            return None
        assert winner.current_model is not None and winner.current_version is not None
        artifact = artifact_for(
            tick.session,
            model=winner.current_model,
            version=winner.current_version,
            profile=device.profile,
        )
        return None if artifact is None else (winner, artifact)

    # Scan without locks; lock (and re-read) only the few devices that are behind.
    candidates = [d.device_id for d in tick.session.scalars(select(DeviceRow)) if target(d)]
    for device in _lock_devices(tick.session, candidates):
        found = target(device)
        if found is None:
            continue
        winner, artifact = found
        # Older than what the device runs (the cohort was rolled back): an explicit rollback,
        # the only way a device accepts a downgrade.
        older = device.reported_model == artifact.name and sort_key(artifact.version) < sort_key(
            device.reported_version or ""
        )
        desired = write_desired(device, artifact, rollback=older, now=tick.now)
        tick.tell(device, desired)
        log.info(
            "device %s joined cohort %s: given %s %s",
            device.device_id,
            winner.name,
            artifact.name,
            artifact.version,
        )
