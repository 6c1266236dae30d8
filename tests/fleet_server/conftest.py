"""Fixtures for the fleet server tests: signing keys, a database on SQLite *and* PostgreSQL
(a fresh schema per test), a real fleet server on a free port, a real MQTT probe client."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import make_url

from edgefleet.bundle import generate_key_pair
from fleet_server.mqtt.url import parse_mqtt_url
from fleet_server.serve import ServerThread
from fleet_server.settings import FleetSettings
from tests.fleet_server.bundles import make_bundle
from tests.support.services import Mosquitto

ADMIN_TOKEN = "operator-token-for-tests"


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path
    other_private: Path  # a valid key the server does not trust


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    private, public = generate_key_pair(directory, "trusted")
    other_private, _ = generate_key_pair(directory, "stranger")
    return Keys(private, public, other_private)


@pytest.fixture(scope="session")
def bundle_tar(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundles"), keys.private)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite in tmp_path, or PostgreSQL isolated in a fresh schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    base: str = request.getfixturevalue("postgres_base_url")
    schema = f"t_{uuid.uuid4().hex}"
    admin = sqlalchemy.create_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Fleet:
    """A running fleet server and an HTTP client that speaks to it."""

    server: ServerThread
    settings: FleetSettings
    token: str = ADMIN_TOKEN
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=f"{self.server.url}/api/v1", timeout=30)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def mqtt_url(self) -> str:
        return self.server.runtime.mqtt_url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def upload(self, tar: Path, *, token: str | None = ADMIN_TOKEN) -> httpx.Response:
        headers = {"Content-Type": "application/x-tar"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.post("/models", content=tar.read_bytes(), headers=headers)

    def register(self, device_id: str, profile: str = "x86-64/avx512-vnni", **labels: str) -> str:
        response = self.http.post(
            "/devices",
            json={"device_id": device_id, "profile": profile, "labels": labels},
            headers=self.auth,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def device(self, device_id: str) -> dict[str, Any]:
        response = self.http.get(f"/devices/{device_id}", headers=self.auth)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_device(
        self, device_id: str, condition: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        view = self.device(device_id)
        while not condition(view):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; device view: {view}")
            time.sleep(0.02)
            view = self.device(device_id)
        return view

    def close(self) -> None:
        self.http.close()
        self.server.stop()


def start_fleet(settings: FleetSettings) -> Fleet:
    return Fleet(ServerThread.start(settings), settings)


@pytest.fixture
def fleet_settings(
    tmp_path: Path, database_url: str, mosquitto: Mosquitto, keys: Keys
) -> FleetSettings:
    return FleetSettings(
        data_dir=tmp_path / "server",
        database_url=database_url,
        mqtt_url=mosquitto.url,
        admin_token=ADMIN_TOKEN,
        trusted_keys=(keys.public,),
        port=0,
    )


@pytest.fixture
def fleet(fleet_settings: FleetSettings) -> Iterator[Fleet]:
    running = start_fleet(fleet_settings)
    try:
        yield running
    finally:
        running.close()


def unique_device(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class MqttProbe:
    """A real paho client: publishes like an agent and collects what it receives."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        address = parse_mqtt_url(url)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.skipped: list[mqtt.MQTTMessage] = []  # taken from the queue by receive(), not matching
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.connect(address.host, address.port, keepalive=30)
        self.client.loop_start()

    def subscribe(self, topic: str) -> None:
        result, _mid = self.client.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def receive(self, topic: str, timeout: float = 10.0) -> mqtt.MQTTMessage:
        """The next message on ``topic`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if message.topic == topic:
                return message
            self.skipped.append(message)
        raise AssertionError(f"no message on {topic} within {timeout}s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def probe_factory() -> Iterator[Callable[[str], MqttProbe]]:
    probes: list[MqttProbe] = []

    def make(url: str) -> MqttProbe:
        probe = MqttProbe(url)
        probes.append(probe)
        return probe

    yield make
    for probe in probes:
        probe.close()
