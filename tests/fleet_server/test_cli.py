"""The operator commands of ``edgefleet fleet`` against a real server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet_server.cli import app
from fleet_server.errors import FleetClientError
from tests.fleet_server.bundles import rewrite_member
from tests.fleet_server.conftest import Fleet, unique_device
from tests.support.services import free_port

pytestmark = pytest.mark.integration

runner = CliRunner()


def cli(fleet: Fleet, *args: str, token: str | None = None) -> tuple[str, str]:
    """Run a command; return (stdout, stderr). Raises what the command raised."""
    result = runner.invoke(app, [*args, "--server", fleet.url, "--token", token or fleet.token])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_push_register_assign_and_list(fleet: Fleet, bundle_tar: Path) -> None:
    cam1, cam2 = unique_device("cam"), unique_device("cam")
    out, _ = cli(fleet, "push", str(bundle_tar))
    assert "tiny 1.0.0 for x86-64/avx512-vnni" in out
    (model,) = json.loads(cli(fleet, "models", "--json")[0])
    assert (model["model"], model["version"]) == ("tiny", "1.0.0")
    assert "tiny" in cli(fleet, "models")[0]

    token, note = cli(
        fleet, "register", cam1, "--profile", "x86-64/avx512-vnni", "--label", "site=lab"
    )
    assert f"{cam1} registered" in note and len(token.strip()) >= 32
    created = json.loads(cli(fleet, "register", cam2, "--profile", "raspberry-pi/4b", "--json")[0])
    assert created["device_id"] == cam2 and created["token"]

    desired = json.loads(
        cli(fleet, "assign", cam1, "--model", "tiny", "--version", "1.0.0", "--json")[0]
    )
    assert desired["artifact_url"] == f"/api/v1/artifacts/{model['artifact_id']}"
    devices = json.loads(cli(fleet, "devices", "--json")[0])
    assert [(d["device_id"], d["labels"], d["desired_version"]) for d in devices] == sorted(
        [(cam1, {"site": "lab"}, "1.0.0"), (cam2, {}, None)]
    )
    assert json.loads(cli(fleet, "device", cam1, "--json")[0])["desired_model"] == "tiny"
    shown = cli(fleet, "device", cam1)[0]
    assert "site=lab" in shown and "tiny 1.0.0" in shown
    assert cam2 in cli(fleet, "devices")[0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_server_errors_become_one_line_naming_the_problem(
    fleet: Fleet, bundle_tar: Path, tmp_path: Path
) -> None:
    tampered = rewrite_member(bundle_tar, tmp_path / "bad.tar", "model.onnx", flip_byte=True)
    with pytest.raises(FleetClientError, match=r"answered 422: model\.onnx: sha256 mismatch"):
        cli(fleet, "push", str(tampered))
    with pytest.raises(FleetClientError, match="answered 401: the token is not the operator"):
        cli(fleet, "models", token="wrong")
    with pytest.raises(FleetClientError, match=r"answered 422: unknown hardware profile 'acme/x'"):
        cli(fleet, "register", "d9", "--profile", "acme/x")
    with pytest.raises(FleetClientError, match=r"answered 422: device_id: .*must be 1-64"):
        cli(fleet, "register", "bad id!", "--profile", "raspberry-pi/4b")
    with pytest.raises(FleetClientError, match="answered 404: device 'ghost' is not registered"):
        cli(fleet, "device", "ghost")
    result = runner.invoke(
        app, ["register", "d1", "--profile", "raspberry-pi/4b", "--label", "nokey"]
    )
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_an_unreachable_server_is_one_line() -> None:
    result = runner.invoke(app, ["models", "--server", f"http://127.0.0.1:{free_port()}"])
    assert isinstance(result.exception, FleetClientError)
    assert "cannot reach the fleet server" in str(result.exception)
    assert "EDGEFLEET_SERVER" in str(result.exception)
