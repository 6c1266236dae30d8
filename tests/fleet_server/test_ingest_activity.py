"""Held-back activity columns (``last_seen``, ``last_telemetry``) and the bridge's whole-batch
retry, on real databases and a real Mosquitto: a device row that only saw activity is written
at most every ``interval_s``, every other change at once, nothing held is lost (idle flush,
stop), and a batch that meets a locked SQLite database is stored whole once the lock goes."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.orm import Session

from edgefleet.codec import encode
from edgefleet.protocol.messages import DeploymentPhase, LatencySummary, Report, Telemetry
from edgefleet.protocol.topics import Channel, topic
from fleet_server.db import create_db_engine, create_schema, session_factory
from fleet_server.devices.service import get_device
from fleet_server.devices.tables import DeviceRow
from fleet_server.ingest.activity import ActivityBuffer
from fleet_server.ingest.service import Incoming, apply_batch
from fleet_server.ingest.tables import TelemetryRow
from fleet_server.mqtt.bridge import MqttBridge
from tests.fleet_server.conftest import MqttProbe, unique_device
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration


class Clock:
    """The buffer's time source, moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def add_device(engine: Engine, device_id: str) -> None:
    with Session(engine) as session:
        session.add(
            DeviceRow(
                device_id=device_id,
                profile="x86-64/avx512-vnni",
                labels={},
                token_sha256=device_id.ljust(64, "0")[:64],
                registered_at=0.0,
            )
        )
        session.commit()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


def telemetry(requests: int) -> Telemetry:
    return Telemetry(
        window_s=1.0,
        requests=requests,
        errors=0,
        latency=LatencySummary(count=requests, p50_ms=1.0, p95_ms=2.0, max_ms=3.0),
        outbox_depth=0,
        active_model="m",
        active_version="1.0.0",
    )


def committed(engine: Engine, buffer: ActivityBuffer, batch: list[Incoming]) -> None:
    with Session(engine) as session:
        applied = apply_batch(session, batch, activity=buffer)
        session.commit()
    assert applied.activity is not None
    buffer.committed(applied.activity)


def row(engine: Engine, device_id: str) -> tuple[float | None, Any, str | None]:
    with Session(engine) as session:
        device = get_device(session, device_id)
        return device.last_seen, device.last_telemetry, device.deployment_phase


def telemetry_rows(engine: Engine, device_id: str) -> int:
    with Session(engine) as session:
        count = session.scalar(
            select(func.count())
            .select_from(TelemetryRow)
            .where(TelemetryRow.device_id == device_id)
        )
        return int(count or 0)


def test_activity_is_held_back_other_changes_are_not(engine: Engine) -> None:
    add_device(engine, "d1")
    clock = Clock()
    buffer = ActivityBuffer(5.0, clock=clock)
    t1, t2, t3 = telemetry(1), telemetry(2), telemetry(3)

    committed(engine, buffer, [Incoming("d1", t1, 1.0, t1.to_bytes())])
    assert row(engine, "d1")[:2] == (1.0, encode(t1))  # first: written at once

    clock.now += 1
    committed(engine, buffer, [Incoming("d1", t2, 2.0, t2.to_bytes())])
    assert row(engine, "d1")[:2] == (1.0, encode(t1))  # held back
    assert telemetry_rows(engine, "d1") == 2  # the telemetry itself is never held
    assert buffer.held_devices == 1

    # A rolled-back batch changes nothing in the buffer: the retry splits the same way.
    with Session(engine) as session:
        apply_batch(session, [Incoming("d1", t3, 2.5, t3.to_bytes())], activity=buffer)
        session.rollback()
    assert buffer.held_devices == 1

    clock.now += 1  # a report is a change of its own: written at once, with what was held
    report = Report(
        deployment_id="dep-1",
        model="m",
        version="2.0.0",
        phase=DeploymentPhase.DOWNLOADING,
        active_model="m",
        active_version="1.0.0",
    )
    committed(engine, buffer, [Incoming("d1", report, 3.0)])
    assert row(engine, "d1") == (3.0, encode(t2), "downloading")
    assert buffer.held_devices == 0

    clock.now += 1
    committed(engine, buffer, [Incoming("d1", t3, 4.0, t3.to_bytes())])
    committed(engine, buffer, [])  # nothing due yet
    assert row(engine, "d1")[:2] == (3.0, encode(t2))
    assert not buffer.has_due()

    clock.now += 5  # due: an empty batch (the bridge's idle flush) writes it
    assert buffer.has_due()
    committed(engine, buffer, [])
    assert row(engine, "d1")[:2] == (4.0, encode(t3))
    assert buffer.held_devices == 0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def bridge_of(mosquitto: Mosquitto) -> Iterator[Callable[..., MqttBridge]]:
    bridges: list[MqttBridge] = []

    def start(engine: Engine, **options: Any) -> MqttBridge:
        bridge = MqttBridge(url=mosquitto.url, sessions=session_factory(engine), **options)
        bridges.append(bridge)
        assert bridge.start()
        return bridge

    yield start
    for bridge in bridges:
        bridge.stop()


def test_held_last_seen_reaches_the_device_within_its_bound(
    engine: Engine, mosquitto: Mosquitto, bridge_of: Callable[..., MqttBridge]
) -> None:
    device_id = unique_device("active")
    add_device(engine, device_id)
    bridge_of(engine, activity_interval_s=1.0)
    probe = MqttProbe(mosquitto.url)
    try:
        for requests in range(1, 21):  # 2 s of telemetry every 0.1 s
            probe.publish(topic(device_id, Channel.TELEMETRY), telemetry(requests).to_bytes())
            time.sleep(0.1)
        wait_for(lambda: telemetry_rows(engine, device_id) == 20, "20 telemetry rows")
        # No more messages: the bridge writes what it held by itself, within the bound.
        stored_at = time.monotonic()
        wait_for(lambda: (row(engine, device_id)[1] or {}).get("requests") == 20, "last one")
        assert time.monotonic() - stored_at < 1.0 + 2.0  # the bound, plus slack for a busy CPU
        # Each message stored once (the bridge's own count also takes in other tests' retained
        # messages on the shared broker, so the device's rows are what is counted).
        assert telemetry_rows(engine, device_id) == 20
    finally:
        probe.close()


def test_held_activity_is_written_on_stop(
    engine: Engine, mosquitto: Mosquitto, bridge_of: Callable[..., MqttBridge]
) -> None:
    device_id = unique_device("stop")
    add_device(engine, device_id)
    bridge = bridge_of(engine, activity_interval_s=3600.0)
    probe = MqttProbe(mosquitto.url)
    try:
        probe.publish(topic(device_id, Channel.TELEMETRY), telemetry(1).to_bytes())
        wait_for(lambda: row(engine, device_id)[1] is not None, "the first write")
        for requests in (2, 3):
            probe.publish(topic(device_id, Channel.TELEMETRY), telemetry(requests).to_bytes())
        wait_for(lambda: telemetry_rows(engine, device_id) == 3, "3 telemetry rows")
        assert (row(engine, device_id)[1] or {}).get("requests") == 1  # the rest held back
        bridge.stop()
        assert (row(engine, device_id)[1] or {}).get("requests") == 3
    finally:
        probe.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_batch_that_meets_a_locked_database_is_retried_whole(
    database_url: str,
    mosquitto: Mosquitto,
    bridge_of: Callable[..., MqttBridge],
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_schema(create_db_engine(database_url))
    # The same SQLite file, with a busy timeout short enough to meet the lock in the test.
    impatient = create_engine(database_url, connect_args={"timeout": 0.2})
    event.listen(impatient, "connect", lambda c, _r: c.execute("PRAGMA foreign_keys=ON"))
    device_id = unique_device("busy")
    add_device(impatient, device_id)
    bridge_of(impatient)
    path = database_url.removeprefix("sqlite:///")
    locker = sqlite3.connect(path, isolation_level=None)
    probe = MqttProbe(mosquitto.url)
    caplog.set_level(logging.WARNING, logger="fleet_server.mqtt.bridge")
    try:
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        for requests in range(1, 11):
            probe.publish(topic(device_id, Channel.TELEMETRY), telemetry(requests).to_bytes())
        wait_for(lambda: "database busy" in caplog.text, "the bridge to meet the lock")
        assert telemetry_rows(impatient, device_id) == 0
        locker.execute("ROLLBACK")
        wait_for(lambda: telemetry_rows(impatient, device_id) == 10, "every message stored")
        assert "one at a time" not in caplog.text
        assert "not stored" not in caplog.text
    finally:
        probe.close()
        locker.close()
        impatient.dispose()
