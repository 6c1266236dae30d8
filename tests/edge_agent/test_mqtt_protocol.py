"""MQTT 5 where the broker speaks it, 3.1.1 otherwise, against real brokers.

Mosquitto speaks MQTT 5. The fleet server's embedded broker (amqtt, run here in its own
process) speaks only 3.1.1 and answers an MQTT 5 CONNECT with CONNACK "unsupported protocol
version". A third peer, a small real TCP server, closes MQTT 5 connections without a CONNACK
(as some older brokers do) and accepts 3.1.1 ones.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.mqtt import MqttLink, MqttProtocol
from edgefleet.protocol.messages import Ack, DesiredState, DeviceState, Status
from tests.edge_agent.helpers import PROFILE, FleetSide, wait_for
from tests.support.processes import ROOT
from tests.support.services import Mosquitto, free_port, wait_for_port

pytestmark = pytest.mark.integration

AMQTT_BROKER = """
import sys, threading
from fleet_server.mqtt.broker import EmbeddedBroker
broker = EmbeddedBroker(port=int(sys.argv[1]))
broker.start()
print("ready", flush=True)
sys.stdin.read()
broker.stop()
"""


@pytest.fixture
def amqtt_url() -> Iterator[str]:
    """The fleet server's embedded amqtt broker, in a separate process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", AMQTT_BROKER, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)


class _Link:
    def __init__(self, url: str, device_id: str) -> None:
        self.acks: list[Ack] = []
        self.desired: list[DesiredState] = []
        self.link = MqttLink(
            url,
            device_id,
            status=lambda: Status(state=DeviceState.ONLINE, profile=PROFILE),
            on_desired=self.desired.append,
            on_ack=self.acks.append,
            keepalive=5,
        )

    def __enter__(self) -> MqttLink:
        self.link.start()
        return self.link

    def __exit__(self, *exc: object) -> None:
        self.link.stop()


def test_mosquitto_gets_mqtt_5(mosquitto: Mosquitto) -> None:
    """The link sends MQTT 5 CONNECTs until it falls back (see the closing peer below), so
    connected with protocol 5 means Mosquitto accepted MQTT 5."""
    device = f"dev-v5-{time.monotonic_ns()}"
    with FleetSide(mosquitto.url, device) as fleet, _Link(mosquitto.url, device) as link:
        assert link.wait_connected(10)
        assert link.protocol is MqttProtocol.MQTT5
        wait_for(lambda: fleet.of("status"), what="online status over MQTT 5")
        fleet.clear_retained()


def test_a_3_1_1_only_broker_gets_3_1_1_and_messages_flow_both_ways(amqtt_url: str) -> None:
    device = "dev-v311"
    holder = _Link(amqtt_url, device)
    with FleetSide(amqtt_url, device) as fleet, holder as link:
        assert link.wait_connected(15)
        assert link.protocol is MqttProtocol.MQTT311
        wait_for(lambda: fleet.of("status"), what="online status over MQTT 3.1.1")
        assert fleet.of("status")[-1].state is DeviceState.ONLINE
        fleet.ack([1, 2, 3])  # server -> device on the subscribed ack topic
        wait_for(lambda: holder.acks, what="an ack delivered to the 3.1.1 link")
        assert holder.acks[0] == Ack.of([1, 2, 3])


def _connect_level(data: bytes) -> int:
    """The protocol level of a CONNECT packet: 4 is MQTT 3.1.1, 5 is MQTT 5."""
    start = 1  # after the packet type byte: the remaining length, 1-4 bytes of 7 bits
    while data[start] & 0x80:
        start += 1
    name = data[start + 1 : start + 7]  # 2-byte length, then "MQTT"
    assert data[0] == 0x10 and name == b"\x00\x04MQTT", data[:16]
    return data[start + 7]


class _ClosesMqtt5:
    """A real TCP peer: closes MQTT 5 CONNECTs without a CONNACK, accepts 3.1.1 ones."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.levels: list[int] = []
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.levels.append(_connect_level(conn.recv(4096)))
            if self.levels[-1] == 5:
                conn.close()
            else:
                conn.sendall(bytes([0x20, 0x02, 0x00, 0x00]))  # CONNACK accepted
                self._held.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self._held:
            conn.close()


def test_a_broker_that_closes_mqtt_5_connections_gets_3_1_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = _ClosesMqtt5()
    try:
        with (
            caplog.at_level("INFO", logger="edge_agent.mqtt"),
            _Link(f"mqtt://127.0.0.1:{peer.port}", "dev-closer") as link,
        ):
            assert link.wait_connected(20), peer.levels
            assert link.protocol is MqttProtocol.MQTT311
        assert peer.levels[:3] == [5, 5, 4]
        assert "does not speak MQTT 5" in caplog.text
        assert "connected to MQTT broker" in caplog.text and "(MQTT 3.1.1)" in caplog.text
    finally:
        peer.close()


def test_a_broker_that_is_down_at_first_is_not_taken_for_a_3_1_1_broker(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(data_dir=tmp_path, port=free_port())
    with _Link(broker.url, "dev-late") as link:
        time.sleep(1.5)  # a few refused TCP connects
        assert not link.connected
        broker.start()
        try:
            assert link.wait_connected(20)
            assert link.protocol is MqttProtocol.MQTT5
        finally:
            link.stop()
            broker.stop()
