"""Apply what devices publish to the database. One call per MQTT message; the caller commits.

Every ``apply_*`` returns ``False`` when the device is not registered, so the bridge can drop
the message. ``reported_model``/``reported_version`` only ever take values the device sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

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
from fleet_server.ingest.tables import PredictionRow, ReportRow, TelemetryRow

# Rows per INSERT statement: keeps far below SQLite's 32766 bound parameters.
_INSERT_CHUNK = 500


def apply_status(session: Session, *, device_id: str, status: Status, received_at: float) -> bool:
    device = session.get(DeviceRow, device_id)
    if device is None:
        return False
    if status.state is DeviceState.OFFLINE:
        # The Last Will is sent by the broker, not the device: last_seen stays as it was.
        device.online = False
        return True
    device.online = True
    device.last_seen = received_at
    device.reported_profile = status.profile
    if status.agent_version is not None:
        device.agent_version = status.agent_version
    _set_reported(device, model=None, version=status.active_version)
    return True


def apply_report(session: Session, *, device_id: str, report: Report, received_at: float) -> bool:
    device = session.get(DeviceRow, device_id)
    if device is None:
        return False
    device.last_seen = received_at
    device.deployment_phase = report.phase.value
    device.deployment_detail = report.detail
    device.reported_deployment_id = report.deployment_id
    if report.active_version is not None:
        _set_reported(device, model=report.active_model, version=report.active_version)
    elif report.phase in (DeploymentPhase.ACTIVE, DeploymentPhase.COMMITTED):
        # An agent that does not send active_version yet: these phases mean it serves it.
        _set_reported(device, model=report.model, version=report.version)
    session.add(
        ReportRow(
            device_id=device_id,
            deployment_id=report.deployment_id,
            model=report.model,
            version=report.version,
            phase=report.phase.value,
            detail=report.detail,
            ts=report.ts,
            received_at=received_at,
        )
    )
    return True


def apply_telemetry(
    session: Session, *, device_id: str, telemetry: Telemetry, received_at: float
) -> bool:
    device = session.get(DeviceRow, device_id)
    if device is None:
        return False
    payload = telemetry.model_dump(mode="json")
    device.last_seen = received_at
    device.last_telemetry = payload
    if telemetry.active_version is not None:
        _set_reported(device, model=telemetry.active_model, version=telemetry.active_version)
    session.add(
        TelemetryRow(
            device_id=device_id,
            ts=telemetry.ts,
            received_at=received_at,
            model=telemetry.active_model,
            version=telemetry.active_version,
            shadow_version=telemetry.shadow.version if telemetry.shadow else None,
            payload=payload,
        )
    )
    return True


def store_predictions(
    session: Session, *, device_id: str, batch: PredictionBatch, received_at: float
) -> list[int] | None:
    """Insert the batch idempotently by (device_id, seq); returns every seq now stored.

    Seqs that were stored before are included, so the agent can delete its duplicates.
    Returns ``None`` for an unregistered device (nothing stored, nothing to acknowledge).
    """
    device = session.get(DeviceRow, device_id)
    if device is None:
        return None
    rows = [_prediction_values(device_id, record, received_at) for record in batch.records]
    inserted = 0
    for start in range(0, len(rows), _INSERT_CHUNK):
        statement = _insert_ignoring_duplicates(session, rows[start : start + _INSERT_CHUNK])
        inserted += len(session.execute(statement.returning(PredictionRow.seq)).all())
    device.last_seen = received_at
    if inserted:
        session.execute(
            update(DeviceRow)
            .where(DeviceRow.device_id == device_id)
            .values(predictions_received=DeviceRow.predictions_received + inserted)
        )
    return sorted({record.seq for record in batch.records})


def list_predictions(session: Session, *, device_id: str, limit: int) -> list[PredictionRow]:
    """The ``limit`` most recent records by seq, oldest first."""
    newest = (
        select(PredictionRow)
        .where(PredictionRow.device_id == device_id)
        .order_by(PredictionRow.seq.desc())
        .limit(limit)
    )
    return sorted(session.scalars(newest), key=lambda row: row.seq)


def _set_reported(device: DeviceRow, *, model: str | None, version: str | None) -> None:
    """Record what the device runs. A Status names only the version: the model is kept when
    the version is unchanged, taken from the desired state when it matches, else unknown."""
    if version is None:
        device.reported_model = device.reported_version = None
        return
    if model is None:
        if version == device.reported_version:
            model = device.reported_model
        elif version == device.desired_version:
            model = device.desired_model
    device.reported_model, device.reported_version = model, version


def _prediction_values(
    device_id: str, record: PredictionRecord, received_at: float
) -> dict[str, Any]:
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
        "received_at": received_at,
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
