"""``apply_batch`` on SQLite and PostgreSQL: a batch of many devices' messages is folded in
arrival order, appended in bulk, and never waits for the executor's device-row locks to insert
telemetry (``FOR NO KEY UPDATE`` does not block foreign key checks)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from edgefleet.codec import encode
from edgefleet.protocol.messages import (
    DeploymentPhase,
    DeviceState,
    LatencySummary,
    Report,
    Status,
    Telemetry,
)
from fleet_server.db import create_db_engine, create_schema, session_factory
from fleet_server.devices.tables import DeviceRow
from fleet_server.ingest.service import Incoming, apply_batch
from fleet_server.ingest.tables import ReportRow, TelemetryRow
from fleet_server.rollouts.executor import _lock_devices

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    create_schema(engine)
    with Session(engine) as session:
        for device_id in ("d1", "d2", "d3"):
            session.add(
                DeviceRow(
                    device_id=device_id,
                    profile="x86-64/avx512-vnni",
                    labels={},
                    token_sha256=device_id * 20,
                    registered_at=0.0,
                )
            )
        session.commit()
    yield engine
    engine.dispose()


def telemetry(version: str, requests: int) -> Telemetry:
    return Telemetry(
        window_s=1.0,
        requests=requests,
        errors=0,
        latency=LatencySummary(count=requests, p50_ms=1.0, p95_ms=2.0, max_ms=3.0),
        outbox_depth=0,
        active_model="m",
        active_version=version,
    )


def report(phase: DeploymentPhase, active: str) -> Report:
    return Report(
        deployment_id="dep-2",
        model="m",
        version="2.0.0",
        phase=phase,
        active_model="m",
        active_version=active,
    )


def test_a_batch_is_folded_in_arrival_order(engine: Engine) -> None:
    t1, t2 = telemetry("1.0.0", 10), telemetry("1.0.0", 20)
    batch = [
        Incoming("d1", Status(state=DeviceState.ONLINE, active_version="1.0.0"), 1.0),
        Incoming("d1", t1, 2.0, t1.to_bytes()),
        Incoming("ghost", t1, 2.5, t1.to_bytes()),
        Incoming("d2", t2, 3.0),  # no raw bytes: dumped from the model
        Incoming("d1", report(DeploymentPhase.DOWNLOADING, "1.0.0"), 4.0),
        Incoming("d1", report(DeploymentPhase.COMMITTED, "2.0.0"), 5.0),
        Incoming("d2", Status(state=DeviceState.ONLINE), 6.0),
        Incoming("d2", Status(state=DeviceState.OFFLINE), 7.0),  # the Last Will
    ]
    with session_factory(engine)() as session:
        applied = apply_batch(session, batch)
        session.commit()
    assert [(item.device_id, item.received_at) for item in applied.unknown] == [("ghost", 2.5)]
    assert applied.acks == []

    with Session(engine) as session:
        d1, d2, d3 = (session.get(DeviceRow, d) for d in ("d1", "d2", "d3"))
        assert d1 is not None and d2 is not None and d3 is not None
        assert (d1.online, d1.last_seen, d1.deployment_phase) == (True, 5.0, "committed")
        assert (d1.reported_model, d1.reported_version) == ("m", "2.0.0")
        assert d1.last_telemetry == encode(t1)
        assert (d2.online, d2.last_seen) == (False, 6.0)  # the Will leaves last_seen as it was
        assert (d2.reported_model, d2.reported_version) == (None, None)  # the status said so
        assert d2.last_telemetry == encode(t2)
        assert (d3.online, d3.last_seen, d3.last_telemetry) == (False, None, None)
        stored = session.scalars(select(TelemetryRow).order_by(TelemetryRow.received_at)).all()
        assert [(row.device_id, row.version, row.payload["requests"]) for row in stored] == [
            ("d1", "1.0.0", 10),
            ("d2", "1.0.0", 20),
        ]
        phases = session.scalars(select(ReportRow.phase).order_by(ReportRow.id)).all()
        assert phases == ["downloading", "committed"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_telemetry_inserts_do_not_wait_for_the_executors_row_locks(engine: Engine) -> None:
    """The executor holds device rows it is about to write; ingest's telemetry insert still
    completes (its foreign key check takes KEY SHARE, which FOR NO KEY UPDATE allows), while its
    device-row update waits for the tick's commit, as it must."""
    sessions: sessionmaker[Session] = session_factory(engine)
    tick = sessions()
    locked = _lock_devices(tick, ["d3", "d1", "d2"])
    assert [d.device_id for d in locked] == ["d1", "d2", "d3"]
    sample = telemetry("1.0.0", 5)
    inserted = threading.Event()
    done = threading.Event()

    def ingest() -> None:
        with sessions() as session:
            rows = [{"device_id": "d1", "ts": 1.0, "received_at": 1.0, "payload": {}}]
            session.execute(insert(TelemetryRow), rows)
            inserted.set()
            apply_batch(session, [Incoming("d1", sample, 2.0, sample.to_bytes())])
            session.commit()
        done.set()

    worker = threading.Thread(target=ingest, daemon=True)
    worker.start()
    try:
        assert inserted.wait(10), "a telemetry insert waited for the executor's row locks"
        assert not done.wait(0.5), "the device-row update did not wait for the tick"
    finally:
        tick.commit()
        tick.close()
    assert done.wait(10)
    worker.join(10)
    with Session(engine) as session:
        device = session.get(DeviceRow, "d1")
        assert device is not None and device.last_seen == 2.0
