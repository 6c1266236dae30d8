"""MQTT ingest with a real broker and a real paho client publishing like an agent."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from edgefleet.codec import encode, from_json
from edgefleet.protocol.messages import (
    Ack,
    DeploymentPhase,
    DeviceState,
    LatencySummary,
    PredictionBatch,
    PredictionRecord,
    Report,
    Status,
    Telemetry,
)
from edgefleet.protocol.topics import Channel, topic
from tests.fleet_server.conftest import Fleet, MqttProbe, unique_device

pytestmark = pytest.mark.integration


def record(seq: int) -> PredictionRecord:
    return PredictionRecord(
        seq=seq,
        record_id=f"r-{seq}",
        model="tiny",
        model_version="1.0.0",
        artifact_sha256="a" * 64,
        input_digest=f"d-{seq}",
        input=[seq, seq + 1] if seq % 2 else None,
        output=[0.25 * seq, 1.0],
        latency_ms=1.5,
        ts=1_700_000_000.0 + seq,
    )


def batch(seqs: range) -> bytes:
    return PredictionBatch(records=tuple(record(seq) for seq in seqs)).to_bytes()


def telemetry(requests: int, version: str | None = "1.0.0") -> Telemetry:
    return Telemetry(
        window_s=5.0,
        requests=requests,
        errors=0,
        latency=LatencySummary(count=requests, p50_ms=1.0, p95_ms=2.0, max_ms=3.0),
        outbox_depth=0,
        active_model="tiny" if version else None,
        active_version=version,
    )


@pytest.fixture
def agent(fleet: Fleet, probe_factory: Callable[[str], MqttProbe]) -> tuple[str, MqttProbe]:
    device_id = unique_device("agent")
    fleet.register(device_id)
    probe = probe_factory(fleet.mqtt_url)
    probe.subscribe(topic(device_id, Channel.ACK))
    return device_id, probe


def test_status_report_and_telemetry_reach_the_device_view(
    fleet: Fleet, agent: tuple[str, MqttProbe]
) -> None:
    device_id, probe = agent
    before = time.time()
    online = Status(state=DeviceState.ONLINE, profile="x86-64/avx512-vnni", active_version=None)
    probe.publish(topic(device_id, Channel.STATUS), online.to_bytes(), retain=True)
    view = fleet.wait_device(device_id, lambda v: v["online"], "online")
    assert view["last_seen"] >= before and view["reported_version"] is None

    for phase in (DeploymentPhase.DOWNLOADING, DeploymentPhase.VERIFYING):
        report = Report(deployment_id="dep-1", model="tiny", version="1.0.0", phase=phase)
        probe.publish(topic(device_id, Channel.REPORT), report.to_bytes())
    view = fleet.wait_device(device_id, lambda v: v["deployment_phase"] == "verifying", "verifying")
    assert view["reported_version"] is None  # not active yet: nothing claimed

    active = Report(
        deployment_id="dep-1",
        model="tiny",
        version="1.0.0",
        phase=DeploymentPhase.ACTIVE,
        detail="golden ok",
    )
    probe.publish(topic(device_id, Channel.REPORT), active.to_bytes())
    view = fleet.wait_device(device_id, lambda v: v["deployment_phase"] == "active", "active")
    assert (view["reported_model"], view["reported_version"], view["deployment_detail"]) == (
        "tiny",
        "1.0.0",
        "golden ok",
    )

    sent = telemetry(42)
    probe.publish(topic(device_id, Channel.TELEMETRY), sent.to_bytes())
    view = fleet.wait_device(device_id, lambda v: v["last_telemetry"] is not None, "telemetry")
    assert view["last_telemetry"] == encode(sent)

    offline = Status(state=DeviceState.OFFLINE)
    probe.publish(topic(device_id, Channel.STATUS), offline.to_bytes(), retain=True)
    view = fleet.wait_device(device_id, lambda v: not v["online"], "offline")
    assert view["reported_version"] == "1.0.0"  # the Last Will does not erase what runs

    from sqlalchemy import func, select

    from fleet_server.ingest.tables import ReportRow, TelemetryRow

    with fleet.server.runtime.sessions() as session:
        phases = session.scalars(
            select(ReportRow.phase).where(ReportRow.device_id == device_id).order_by(ReportRow.id)
        )
        assert list(phases) == ["downloading", "verifying", "active"]
        count = session.scalar(
            select(func.count())
            .select_from(TelemetryRow)
            .where(TelemetryRow.device_id == device_id)
        )
        assert count == 1
    probe.publish(topic(device_id, Channel.STATUS), b"", retain=True)  # clear the retained status


def test_a_status_version_is_what_the_device_runs(
    fleet: Fleet, agent: tuple[str, MqttProbe]
) -> None:
    device_id, probe = agent
    status = Status(state=DeviceState.ONLINE, profile="x86-64/avx512-vnni", active_version="2.0.0")
    probe.publish(topic(device_id, Channel.STATUS), status.to_bytes())
    view = fleet.wait_device(device_id, lambda v: v["reported_version"] == "2.0.0", "version")
    assert view["reported_model"] is None  # the status names no model, none is invented
    probe.publish(topic(device_id, Channel.TELEMETRY), telemetry(1, "2.0.0").to_bytes())
    fleet.wait_device(
        device_id, lambda v: v["reported_model"] == "tiny", "the model from telemetry"
    )
    probe.publish(
        topic(device_id, Channel.STATUS),
        replace(status, active_version=None).to_bytes(),
    )
    view = fleet.wait_device(device_id, lambda v: v["reported_version"] is None, "no version")
    assert view["reported_model"] is None


def test_predictions_are_stored_once_and_every_seq_is_acked(
    fleet: Fleet, agent: tuple[str, MqttProbe]
) -> None:
    device_id, probe = agent
    ack_topic = topic(device_id, Channel.ACK)
    probe.publish(topic(device_id, Channel.PREDICTIONS), batch(range(1, 6)))
    first = from_json(Ack, probe.receive(ack_topic).payload)
    assert list(first.seqs()) == [1, 2, 3, 4, 5]

    # A resend overlapping what is stored: duplicates are acked again, stored once.
    probe.publish(topic(device_id, Channel.PREDICTIONS), batch(range(4, 9)))
    second = from_json(Ack, probe.receive(ack_topic).payload)
    assert list(second.seqs()) == [4, 5, 6, 7, 8]
    probe.publish(topic(device_id, Channel.PREDICTIONS), batch(range(1, 9)))
    third = from_json(Ack, probe.receive(ack_topic).payload)
    assert third.ranges == ((1, 8),)

    view = fleet.device(device_id)
    assert view["predictions_received"] == 8
    stored = fleet.http.get(f"/devices/{device_id}/predictions", headers=fleet.auth).json()
    assert [item["seq"] for item in stored] == list(range(1, 9))
    assert stored[2] == {
        **encode(record(3)),
        "device_id": device_id,
        "received_at": stored[2]["received_at"],
    }
    latest = fleet.http.get(f"/devices/{device_id}/predictions?limit=3", headers=fleet.auth).json()
    assert [item["seq"] for item in latest] == [6, 7, 8]


def test_a_large_batch_is_stored_in_one_message(fleet: Fleet, agent: tuple[str, MqttProbe]) -> None:
    device_id, probe = agent
    probe.publish(topic(device_id, Channel.PREDICTIONS), batch(range(1, 1201)))
    ack = from_json(Ack, probe.receive(topic(device_id, Channel.ACK)).payload)
    assert ack.ranges == ((1, 1200),)
    assert fleet.device(device_id)["predictions_received"] == 1200


def test_unknown_devices_and_malformed_payloads_are_dropped_not_fatal(
    fleet: Fleet, agent: tuple[str, MqttProbe], probe_factory: Callable[[str], MqttProbe]
) -> None:
    device_id, probe = agent
    stranger = unique_device("stranger")
    probe.subscribe(topic(stranger, Channel.ACK))
    probe.publish(topic(stranger, Channel.PREDICTIONS), batch(range(1, 3)))
    probe.publish(topic(stranger, Channel.STATUS), Status(state=DeviceState.ONLINE).to_bytes())
    probe.publish(topic(device_id, Channel.PREDICTIONS), b"{not json")
    probe.publish(topic(device_id, Channel.PREDICTIONS), b'{"records": []}')
    probe.publish(topic(device_id, Channel.TELEMETRY), b'{"requests": "many"}')
    probe.publish(topic(device_id, Channel.REPORT), b'{"phase": "exploded"}')
    probe.publish("edgefleet/v1/bad id/status", b"{}")
    # The bridge still works, in order, after all of that.
    probe.publish(topic(device_id, Channel.PREDICTIONS), batch(range(1, 2)))
    ack = from_json(Ack, probe.receive(topic(device_id, Channel.ACK)).payload)
    assert ack.ranges == ((1, 1),)
    assert fleet.device(device_id)["predictions_received"] == 1
    assert fleet.device(device_id)["last_telemetry"] is None
    assert fleet.http.get(f"/devices/{stranger}", headers=fleet.auth).status_code == 404
    # Nothing was acknowledged to the unknown device (the bridge works in order, so an ack for
    # it would have come before the one received above).
    assert [m.topic for m in probe.skipped] == [] and probe.messages.empty()
