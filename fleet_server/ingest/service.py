"""Apply what devices publish to the database, a batch of MQTT messages at a time.

:func:`apply_batch` is built to keep up with a thousand devices on PostgreSQL and SQLite:

- one ``SELECT`` (no lock) finds which devices of the batch are registered and what they last
  reported; messages of unknown devices are returned, not stored;
- the messages are folded in arrival order into what each device row becomes, so a device
  that sent ten messages in the batch is written once;
- the device rows are written first: on PostgreSQL one ``SELECT ... FOR NO KEY UPDATE`` locks
  the batch's rows in device id order (the order the rollout executor locks them in, so the two
  cannot deadlock; one lock per device per batch, none per message), then one executemany
  ``UPDATE`` per set of changed columns. Ingest writes only the reported/activity columns; the
  executor writes only the ``desired_*`` ones. A row that changes only ``last_seen`` and
  ``last_telemetry`` is written at most every few seconds
  (:class:`~fleet_server.ingest.activity.ActivityBuffer`), and not locked otherwise;
- telemetry is appended with ``COPY`` on PostgreSQL (executemany on SQLite), its payload as the
  JSON text the device sent (validated, not dumped and re-encoded); reports with one
  executemany ``INSERT``, terminal ones ``ON CONFLICT DO NOTHING`` on
  ``(device_id, outcome_key)`` (:func:`outcome_key`: the same terminal report is stored once,
  however often the agent re-sends it); predictions ``INSERT ... ON CONFLICT DO NOTHING`` on
  ``(device_id, seq)``. The foreign key checks of these inserts need no lock of their own: the
  transaction already holds the device rows.

``reported_model``/``reported_version`` only ever take values the device sent. The caller
commits.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Table,
    Text,
    bindparam,
    cast,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edgefleet.codec import to_json
from edgefleet.protocol.messages import (
    DeploymentPhase,
    DeviceState,
    PredictionBatch,
    PredictionRecord,
    Report,
    Status,
    Telemetry,
)
from fleet_server.devices.tables import DeviceRow
from fleet_server.ingest.activity import ActivityBuffer, ActivitySplit, Changes
from fleet_server.ingest.tables import PredictionRow, ReportRow, TelemetryRow

# Rows per statement: keeps far below SQLite's 32766 bound parameters.
_CHUNK = 500
TERMINAL_PHASES = frozenset(
    {DeploymentPhase.COMMITTED, DeploymentPhase.ROLLED_BACK, DeploymentPhase.FAILED}
)

DeviceMessage = Status | Report | Telemetry | PredictionBatch
# Core tables: executemany of cached statements (the drivers batch them), without the ORM's
# per-row bookkeeping.
_DEVICES: Table = DeviceRow.__table__  # type: ignore[assignment]
_TELEMETRY: Table = TelemetryRow.__table__  # type: ignore[assignment]
_REPORTS: Table = ReportRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Incoming:
    device_id: str
    message: DeviceMessage
    received_at: float
    raw: bytes | None = None  # the JSON the device sent (validated as ``message``)

    def json_text(self) -> str:
        """The message as JSON text: what the device sent, without a dump and re-encode."""
        return self.raw.decode() if self.raw else to_json(self.message)


@dataclass
class Applied:
    acks: list[tuple[str, list[int]]] = field(default_factory=list)  # (device, stored seqs)
    unknown: list[Incoming] = field(default_factory=list)  # from unregistered devices
    activity: ActivitySplit | None = None  # for ``ActivityBuffer.committed`` after the commit


@dataclass
class _Device:
    """What a device row holds of its reports while the batch is folded."""

    reported_model: str | None
    reported_version: str | None
    desired_model: str | None
    desired_version: str | None
    changes: dict[str, Any] = field(default_factory=dict)

    def set_reported(self, *, model: str | None, version: str | None) -> None:
        """Record what the device runs. A Status names only the version: the model is kept when
        the version is unchanged, taken from the desired state when it matches, else unknown."""
        if version is not None and model is None:
            if version == self.reported_version:
                model = self.reported_model
            elif version == self.desired_version:
                model = self.desired_model
        if version is None:
            model = None
        if (model, version) == (self.reported_model, self.reported_version):
            return  # unchanged: a device row that only saw activity may be held back
        self.reported_model, self.reported_version = model, version
        self.changes["reported_model"], self.changes["reported_version"] = model, version


def apply_batch(
    session: Session, batch: Sequence[Incoming], *, activity: ActivityBuffer | None = None
) -> Applied:
    """Apply ``batch`` in arrival order; returns the acks to publish and the unknown senders.

    With ``activity``, device rows whose only change is ``last_seen``/``last_telemetry`` are
    written at most every ``activity.interval_s`` (the caller reports the commit to it)."""
    devices = _load(session, sorted({item.device_id for item in batch}))
    applied = Applied()
    telemetry: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    predictions: dict[str, list[PredictionRecord]] = defaultdict(list)
    for item in batch:
        device = devices.get(item.device_id)
        if device is None:
            applied.unknown.append(item)
            continue
        message, at = item.message, item.received_at
        if isinstance(message, Status):
            _fold_status(device, message, at)
        elif isinstance(message, Report):
            _fold_report(device, message, at)
            reports.append(_report_values(item.device_id, message, at))
        elif isinstance(message, Telemetry):
            payload = item.json_text()
            device.changes.update(last_seen=at, last_telemetry=payload)
            if message.active_version is not None:
                device.set_reported(model=message.active_model, version=message.active_version)
            telemetry.append(_telemetry_values(item.device_id, message, payload, at))
        else:
            device.changes["last_seen"] = at
            predictions[item.device_id].extend(message.records)
    changes = {device_id: d.changes for device_id, d in devices.items() if d.changes}
    if activity is not None:
        changes, applied.activity = activity.split(changes)
    # Device rows first: on PostgreSQL this transaction then holds their row locks, so the
    # foreign key checks of the inserts below take none of their own (a row held back takes
    # a KEY SHARE lock, which neither blocks nor waits for the executor's row locks).
    _write_devices(session, changes)
    _append_telemetry(session, telemetry)
    if reports:
        _append_reports(session, reports)
    for device_id, records in predictions.items():
        at = devices[device_id].changes["last_seen"]
        inserted = _store_predictions(session, device_id, records, at)
        if inserted:
            session.execute(
                update(DeviceRow)
                .where(DeviceRow.device_id == device_id)
                .values(predictions_received=DeviceRow.predictions_received + inserted)
            )
        applied.acks.append((device_id, sorted({record.seq for record in records})))
    return applied


def list_predictions(session: Session, *, device_id: str, limit: int) -> list[PredictionRow]:
    """The ``limit`` most recent records by seq, oldest first."""
    newest = (
        select(PredictionRow)
        .where(PredictionRow.device_id == device_id)
        .order_by(PredictionRow.seq.desc())
        .limit(limit)
    )
    return sorted(session.scalars(newest), key=lambda row: row.seq)


# -- folding messages into a device row -------------------------------------------------------


def _fold_status(device: _Device, status: Status, at: float) -> None:
    if status.state is DeviceState.OFFLINE:
        # The Last Will is sent by the broker, not the device: last_seen stays as it was.
        device.changes["online"] = False
        return
    device.changes.update(online=True, last_seen=at, reported_profile=status.profile)
    if status.agent_version is not None:
        device.changes["agent_version"] = status.agent_version
    device.set_reported(model=None, version=status.active_version)


def _fold_report(device: _Device, report: Report, at: float) -> None:
    device.changes.update(
        last_seen=at,
        deployment_phase=report.phase.value,
        deployment_detail=report.detail,
        reported_deployment_id=report.deployment_id,
    )
    if report.active_version is not None:
        device.set_reported(model=report.active_model, version=report.active_version)
    elif report.phase in (DeploymentPhase.ACTIVE, DeploymentPhase.COMMITTED):
        # An agent that does not send active_version yet: these phases mean it serves it.
        device.set_reported(model=report.model, version=report.version)


# -- statements -------------------------------------------------------------------------------


def _load(session: Session, device_ids: list[str]) -> dict[str, _Device]:
    devices: dict[str, _Device] = {}
    for start in range(0, len(device_ids), _CHUNK):
        rows = session.execute(
            select(
                DeviceRow.device_id,
                DeviceRow.reported_model,
                DeviceRow.reported_version,
                DeviceRow.desired_model,
                DeviceRow.desired_version,
            ).where(DeviceRow.device_id.in_(device_ids[start : start + _CHUNK]))
        )
        for device_id, reported_model, reported_version, desired_model, desired_version in rows:
            devices[device_id] = _Device(
                reported_model, reported_version, desired_model, desired_version
            )
    return devices


_TELEMETRY_COLUMNS = ("device_id", "ts", "received_at", "model", "version", "shadow_version")


def _append_telemetry(session: Session, rows: list[dict[str, Any]]) -> None:
    """Append telemetry rows, payloads as the JSON text they arrived as: ``COPY`` on
    PostgreSQL (one stream instead of a statement per row), executemany on SQLite."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        as_text = insert(_TELEMETRY).values(payload=_json_param(session, "payload"))
        connection.execute(as_text, rows)
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    columns = ", ".join((*_TELEMETRY_COLUMNS, "payload"))
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {_TELEMETRY.name} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row([*(row[c] for c in _TELEMETRY_COLUMNS), row["payload"]])


def _append_reports(session: Session, rows: list[dict[str, Any]]) -> None:
    """Append reports in arrival order; a terminal report already stored (in an earlier
    batch, by a concurrent ingest, or earlier in this one) is skipped by the unique index."""
    dialect = session.get_bind().dialect.name
    statement: Insert
    if dialect == "postgresql":
        statement = postgresql.insert(_REPORTS).on_conflict_do_nothing(
            index_elements=["device_id", "outcome_key"]
        )
    elif dialect == "sqlite":
        statement = sqlite.insert(_REPORTS).on_conflict_do_nothing(
            index_elements=["device_id", "outcome_key"]
        )
    else:
        raise NotImplementedError(f"report ingest supports sqlite and postgresql, not {dialect}")
    session.connection().execute(statement, rows)


def _write_devices(session: Session, changes: Changes) -> None:
    """Write ``changes``: every device row written is first locked in device id order (on
    PostgreSQL; the executor's order, so the two cannot deadlock), then one executemany
    ``UPDATE`` per set of columns the devices change (compiled once per shape)."""
    if not changes:
        return
    ids = sorted(changes)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for device_id in ids:
        values = changes[device_id]
        groups[tuple(sorted(values))].append({"key": device_id, **values})
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            connection.execute(
                select(_DEVICES.c.device_id)
                .where(_DEVICES.c.device_id.in_(chunk))
                .order_by(_DEVICES.c.device_id)
                .with_for_update(key_share=True)
            )
    for columns, rows in groups.items():
        values = {
            c: _json_param(session, c) if c == "last_telemetry" else bindparam(c) for c in columns
        }
        statement = update(_DEVICES).where(_DEVICES.c.device_id == bindparam("key"))
        connection.execute(statement.values(values), rows)


def _json_param(session: Session, name: str) -> ColumnElement[Any]:
    """A parameter that takes JSON *text* into a JSON column (no ``json.dumps`` on the way)."""
    param: ColumnElement[Any] = bindparam(name, type_=Text())
    if session.get_bind().dialect.name == "postgresql":
        return cast(param, postgresql.JSONB)
    return param  # SQLite keeps JSON as text


def _store_predictions(
    session: Session, device_id: str, records: list[PredictionRecord], at: float
) -> int:
    """Insert idempotently by (device_id, seq); returns how many rows were new."""
    rows = [_prediction_values(device_id, record, at) for record in records]
    inserted = 0
    for start in range(0, len(rows), _CHUNK):
        statement = _insert_ignoring_duplicates(session, rows[start : start + _CHUNK])
        inserted += len(session.execute(statement.returning(PredictionRow.seq)).all())
    return inserted


def _telemetry_values(
    device_id: str, telemetry: Telemetry, payload: str, at: float
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "ts": telemetry.ts,
        "received_at": at,
        "model": telemetry.active_model,
        "version": telemetry.active_version,
        "shadow_version": telemetry.shadow.version if telemetry.shadow else None,
        "payload": payload,
    }


def outcome_key(report: Report) -> str | None:
    """What makes a terminal report the same one again: a digest of its deployment, phase and
    detail (fixed-size, so any detail fits the index); None for a progress report."""
    if report.phase not in TERMINAL_PHASES:
        return None
    same = json.dumps([report.deployment_id, report.phase.value, report.detail])
    return hashlib.sha256(same.encode()).hexdigest()


def _report_values(device_id: str, report: Report, at: float) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "deployment_id": report.deployment_id,
        "model": report.model,
        "version": report.version,
        "phase": report.phase.value,
        "detail": report.detail,
        "ts": report.ts,
        "received_at": at,
        "outcome_key": outcome_key(report),
    }


def _prediction_values(device_id: str, record: PredictionRecord, at: float) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "seq": record.seq,
        "record_id": record.record_id,
        "model": record.model,
        "model_version": record.model_version,
        "artifact_sha256": record.artifact_sha256,
        "input_digest": record.input_digest,
        "input": record.input,
        "output": record.output,
        "latency_ms": record.latency_ms,
        "ts": record.ts,
        "received_at": at,
    }


def _insert_ignoring_duplicates(session: Session, rows: Sequence[dict[str, Any]]) -> Insert:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return (
            postgresql.insert(PredictionRow)
            .values(list(rows))
            .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        )
    if dialect == "sqlite":
        return (
            sqlite.insert(PredictionRow)
            .values(list(rows))
            .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        )
    raise NotImplementedError(f"prediction ingest supports sqlite and postgresql, not {dialect}")
