from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.cli import parse_listen, trusted_keys
from edge_agent.errors import AgentError
from edge_agent.mqtt import BrokerAddress, parse_mqtt_url
from edge_agent.update import AgentState, Deployment, State, StateStore
from edgefleet.protocol.messages import DesiredState


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8470") == ("127.0.0.1", 8470)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    for bad in ("8470", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(AgentError, match="--listen"):
            parse_listen(bad)


def test_mqtt_urls() -> None:
    assert parse_mqtt_url("mqtt://127.0.0.1:1884") == BrokerAddress("127.0.0.1", 1884)
    assert parse_mqtt_url("mqtt://broker") == BrokerAddress("broker", 1883)
    assert parse_mqtt_url("mqtt://dev%201:s3cret@b:1") == BrokerAddress("b", 1, "dev 1", "s3cret")
    with pytest.raises(AgentError, match="mqtt://host:port"):
        parse_mqtt_url("http://broker:1883")


def test_trusted_keys_come_from_flags_and_the_data_dir(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="no trusted public key"):
        trusted_keys([], tmp_path)
    (tmp_path / "trusted_keys").mkdir()
    (tmp_path / "trusted_keys" / "b.pub").write_text("x")
    (tmp_path / "trusted_keys" / "a.pub").write_text("x")
    (tmp_path / "trusted_keys" / "notes.txt").write_text("x")
    explicit = tmp_path / "ops.pub"
    assert trusted_keys([explicit], tmp_path) == [
        explicit,
        tmp_path / "trusted_keys" / "a.pub",
        tmp_path / "trusted_keys" / "b.pub",
    ]


def test_state_round_trip_and_a_corrupt_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.load() == AgentState()
    state = AgentState(
        deployment=Deployment(
            desired=DesiredState(
                deployment_id="d1",
                model="m",
                version="1.0.0",
                artifact_url="/a",
                sha256="0" * 64,
                size=1,
            ),
            state=State.STAGING,
            entries={"staging": 1},
        )
    )
    state.remember_failure("d0", "model.onnx: sha256 mismatch")
    store.save(state)
    assert store.load() == state
    assert not (tmp_path / "state.json.tmp").exists()

    (tmp_path / "state.json").write_text("{not json")
    assert store.load() == AgentState()
    assert (tmp_path / "state.json.corrupt").read_text() == "{not json"
