"""The zero-set-up default: no --mqtt starts an in-process amqtt broker the bridge uses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefleet.codec import decode, from_json
from edgefleet.protocol.messages import Ack, DesiredState, DeviceState, PredictionBatch, Status
from edgefleet.protocol.topics import Channel, topic
from fleet_server.errors import ConfigError
from fleet_server.mqtt.broker import EmbeddedBroker
from fleet_server.settings import FleetSettings
from tests.fleet_server.conftest import ADMIN_TOKEN, Keys, MqttProbe, start_fleet
from tests.fleet_server.test_ingest import record

pytestmark = pytest.mark.integration


def test_the_embedded_broker_carries_ingest_acks_and_desired_state(
    tmp_path: Path,
    database_url: str,
    keys: Keys,
    bundle_tar: Path,
    probe_factory: Callable[[str], MqttProbe],
) -> None:
    settings = FleetSettings(
        data_dir=tmp_path / "server",
        database_url=database_url,
        mqtt_url=None,
        mqtt_port=0,
        admin_token=ADMIN_TOKEN,
        trusted_keys=(keys.public,),
        port=0,
    )
    fleet = start_fleet(settings)
    try:
        broker = fleet.server.runtime.broker
        assert broker is not None and broker.port != 0
        assert fleet.http.get("/info").json()["mqtt_url"] == f"mqtt://127.0.0.1:{broker.port}"
        fleet.register("emb-1")
        fleet.upload(bundle_tar)

        agent = probe_factory(fleet.mqtt_url)
        agent.subscribe(topic("emb-1", Channel.ACK))
        online = Status(
            state=DeviceState.ONLINE, profile="x86-64/avx512-vnni", active_version="1.0.0"
        )
        agent.publish(topic("emb-1", Channel.STATUS), online.to_bytes(), retain=True)
        records = PredictionBatch(records=(record(1), record(2)))
        agent.publish(topic("emb-1", Channel.PREDICTIONS), records.to_bytes())
        ack = from_json(Ack, agent.receive(topic("emb-1", Channel.ACK)).payload)
        assert ack.ranges == ((1, 2),)
        view = fleet.wait_device("emb-1", lambda v: v["online"], "online")
        assert view["predictions_received"] == 2 and view["reported_version"] == "1.0.0"

        desired = fleet.http.put(
            "/devices/emb-1/desired", json={"model": "tiny", "version": "1.0.0"}, headers=fleet.auth
        ).json()
        late = probe_factory(fleet.mqtt_url)
        late.subscribe(topic("emb-1", Channel.DESIRED))
        message = late.receive(topic("emb-1", Channel.DESIRED))
        assert message.retain
        assert (
            decode(DesiredState, json.loads(message.payload)).deployment_id
            == desired["deployment_id"]
        )
    finally:
        fleet.close()


def test_a_busy_port_is_one_clear_error() -> None:
    first = EmbeddedBroker(port=0)
    first.start()
    try:
        with pytest.raises(ConfigError) as caught:
            EmbeddedBroker(port=first.port).start()
        message = str(caught.value)
        assert f"MQTT port {first.port}" in message
        assert "--mqtt-port 0" in message and "--mqtt mqtt://" in message
    finally:
        first.stop()
