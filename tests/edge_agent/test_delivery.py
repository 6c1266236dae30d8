"""Delivery through a real Mosquitto with a test-side subscriber playing the server's ack role."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from edge_agent.delivery import Delivery
from edge_agent.mqtt import MqttLink
from edge_agent.outbox import Outbox
from edgefleet.protocol.messages import Ack, DeviceState, PredictionBatch, Status
from edgefleet.protocol.topics import Channel
from tests.edge_agent.helpers import FleetSide, wait_for
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration


def _record(n: int) -> dict[str, object]:
    return {
        "record_id": f"r{n}",
        "model": "tiny",
        "model_version": "1.0.0",
        "artifact_sha256": "a" * 64,
        "input_digest": f"d{n}",
        "output": [float(n)],
        "latency_ms": 0.1,
        "ts": 1.0,
    }


def test_records_leave_the_outbox_only_when_acked(tmp_path: Path, mosquitto: Mosquitto) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.append_many([_record(n) for n in range(450)])

    def on_ack(ack: Ack) -> None:
        delivery.handle_ack(ack)

    link = MqttLink(
        mosquitto.url,
        device,
        status=lambda: Status(state=DeviceState.ONLINE, profile="x86-64/avx512-vnni"),
        on_desired=lambda desired: None,
        on_ack=on_ack,
        on_connected=lambda: delivery.reset(),
    )

    def publish(batch: PredictionBatch) -> bool:
        return link.publish(Channel.PREDICTIONS, batch, qos=1)

    delivery = Delivery(
        outbox=outbox,
        publish=publish,
        connected=lambda: link.connected,
        ack_timeout=1.5,
        poll_interval=0.05,
    )
    with FleetSide(mosquitto.url, device, auto_ack=False) as fleet:
        link.start()
        delivery.start()
        try:
            wait_for(lambda: set(fleet.seqs()) >= set(range(1, 451)), what="all 450 records")
            sizes = [len(batch.records) for batch in fleet.of("predictions")[:3]]
            assert sizes == [200, 200, 50]
            assert outbox.depth() == 450, "nothing may leave the outbox before an ack"

            fleet.ack(range(1, 451, 2))
            wait_for(lambda: outbox.depth() == 225, what="odd seqs deleted")
            assert [r.seq for r in outbox.pending(1000)] == list(range(2, 451, 2))

            # Unacknowledged records come again after the ack timeout; acked ones do not.
            wait_for(lambda: Counter(fleet.seqs())[450] >= 2, what="re-send of unacked records")
            counts = Counter(fleet.seqs())
            assert all(counts[seq] == 1 for seq in range(1, 451, 2))

            fleet.ack(range(2, 451, 2))
            wait_for(lambda: outbox.depth() == 0, what="all deleted after the second ack")
            assert delivery.inflight() == {}
        finally:
            delivery.stop()
            link.stop()
            fleet.clear_retained()
            outbox.close()


def test_each_re_send_doubles_the_wait_up_to_the_cap(tmp_path: Path) -> None:
    """A server that is behind gets fewer duplicates, not a flood every ack timeout."""
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.append_many([_record(n) for n in range(3)])
    sent: list[list[int]] = []

    def publish(batch: PredictionBatch) -> bool:
        sent.append([record.seq for record in batch.records])
        return True

    delivery = Delivery(
        outbox=outbox, publish=publish, connected=lambda: True, ack_timeout=0.05,
        max_ack_timeout=0.2,
    )  # fmt: skip
    waits = []
    for _ in range(5):
        wait_for(lambda: delivery.tick() > 0, timeout=5, what="a (re-)send")
        waits.append(min(delivery.inflight().values()) - time.monotonic())
    assert sent == [[1, 2, 3]] * 5
    for got, expected in zip(waits, [0.05, 0.1, 0.2, 0.2, 0.2], strict=True):
        assert expected / 2 < got <= expected, waits  # due time set just before it was read
    delivery.handle_ack(Ack.of([1, 2, 3]))
    assert delivery.inflight() == {}
    delivery.reset()
    outbox.close()
