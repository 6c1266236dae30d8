"""Settings resolution: admin token, trusted keys, URLs, ports. Mostly pure and fast."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from edgefleet.bundle import SigningKeyError, generate_key_pair, load_verify_key
from fleet_server.client import _detail
from fleet_server.errors import ConfigError
from fleet_server.mqtt.url import parse_mqtt_url
from fleet_server.runtime import load_trusted_keys, open_database
from fleet_server.serve import bind_http
from fleet_server.settings import FleetSettings
from fleet_server.tokens import resolve_admin_token
from tests.fleet_server.conftest import ADMIN_TOKEN, Keys, start_fleet
from tests.support.services import Mosquitto


def test_the_admin_token_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = FleetSettings(data_dir=tmp_path / "data")
    first = resolve_admin_token(settings)
    assert first.file == str(settings.admin_token_file.resolve())
    assert stat.S_IMODE(settings.admin_token_file.stat().st_mode) == 0o600
    assert len(first.value) >= 32
    assert resolve_admin_token(settings).value == first.value  # reused, not regenerated


def test_a_given_admin_token_is_used_and_not_stored(tmp_path: Path) -> None:
    settings = FleetSettings(data_dir=tmp_path, admin_token="a-given-token")
    token = resolve_admin_token(settings)
    assert (token.value, token.file) == ("a-given-token", None)
    assert token.matches("a-given-token") and not token.matches("a-given-tokeN")
    assert not settings.admin_token_file.exists()


def test_trusted_keys_come_from_flags_and_the_data_dir(tmp_path: Path, keys: Keys) -> None:
    settings = FleetSettings(data_dir=tmp_path, trusted_keys=(keys.public,))
    assert load_trusted_keys(settings) == (load_verify_key(keys.public),)
    _, extra = generate_key_pair(settings.trusted_keys_dir, "extra")
    (settings.trusted_keys_dir / "dup.pub").write_bytes(keys.public.read_bytes())
    ids = {key.key_id for key in load_trusted_keys(settings)}
    assert ids == {load_verify_key(keys.public).key_id, load_verify_key(extra).key_id}
    (settings.trusted_keys_dir / "broken.pub").write_text("not a key")
    with pytest.raises(SigningKeyError, match=r"broken\.pub"):
        load_trusted_keys(settings)


@pytest.mark.parametrize(
    ("url", "host", "port", "user"),
    [
        ("mqtt://127.0.0.1:1999", "127.0.0.1", 1999, None),
        ("mqtt://broker.local", "broker.local", 1883, None),
        ("tcp://fleet:s%40cret@10.0.0.5:1884", "10.0.0.5", 1884, "fleet"),
    ],
)
def test_mqtt_urls(url: str, host: str, port: int, user: str | None) -> None:
    address = parse_mqtt_url(url)
    assert (address.host, address.port, address.username) == (host, port, user)
    if user:
        assert address.password == "s@cret"


@pytest.mark.parametrize(
    "url", ["mqtts://host:8883", "http://host", "mqtt://:1883", "mqtt://h:99999"]
)
def test_bad_mqtt_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="MQTT URL"):
        parse_mqtt_url(url)


def test_a_busy_http_port_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"HTTP port {port} on 127.0.0.1 is already in use"):
            bind_http("127.0.0.1", port)


def test_an_unreachable_database_hides_the_password() -> None:
    with pytest.raises(
        ConfigError,
        match=r"cannot open the database postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:1/x",
    ):
        open_database("postgresql+psycopg://u:secret@127.0.0.1:1/x")


def test_error_details_are_read_from_fastapi_answers() -> None:
    assert _detail(b'{"detail": "model.onnx: sha256 mismatch"}') == "model.onnx: sha256 mismatch"
    listed = b'{"detail": [{"loc": ["body", "profile"], "msg": "Field required"}]}'
    assert _detail(listed) == "profile: Field required"
    assert _detail(b"Internal Server Error") == "Internal Server Error"


@pytest.mark.integration
def test_without_a_trusted_key_uploads_are_refused_saying_how_to_add_one(
    tmp_path: Path, mosquitto: Mosquitto, bundle_tar: Path, keys: Keys
) -> None:
    settings = FleetSettings(
        data_dir=tmp_path / "server", mqtt_url=mosquitto.url, admin_token=ADMIN_TOKEN, port=0
    )
    fleet = start_fleet(settings)
    try:
        refused = fleet.upload(bundle_tar)
        assert refused.status_code == 503
        assert "--trusted-key" in refused.json()["detail"]
        assert str(settings.trusted_keys_dir) in refused.json()["detail"]
    finally:
        fleet.close()
    settings.trusted_keys_dir.mkdir()
    (settings.trusted_keys_dir / "release.pub").write_bytes(keys.public.read_bytes())
    fleet = start_fleet(settings)  # same data dir, SQLite file kept: a restart
    try:
        assert fleet.upload(bundle_tar).status_code == 201
    finally:
        fleet.close()
