"""``edgefleet model | device | cohort | rollout`` against a real server and simulated devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from fleet_server.settings import FleetSettings
from fleet_server.simulator import Behaviour
from tests.fleet_server.conftest import Fleet, Keys, start_fleet
from tests.fleet_server.scenario import MODEL, bundles, sim_fleet

pytestmark = pytest.mark.integration

runner = CliRunner()


def cli(fleet: Fleet, *args: str) -> str:
    result = runner.invoke(app, [*args, "--server", fleet.url, "--token", fleet.token])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_push_cohort_rollout_and_watch(
    fleet_settings: FleetSettings, keys: Keys, tmp_path: Path
) -> None:
    fleet = start_fleet(fleet_settings.model_copy(update={"executor_interval_s": 0.05}))
    try:
        for tar in bundles(tmp_path, keys.private, ("1.0.0", "2.0.0")):
            assert f"{MODEL} " in cli(fleet, "model", "push", str(tar))
        assert "production" in cli(fleet, "model", "alias", MODEL, "production", "2.0.0")
        listed = cli(fleet, "model", "ls", MODEL)
        assert "2.0.0" in listed and "production" in listed
        with sim_fleet(fleet) as sims:
            for _ in range(3):
                sims.add(Behaviour())
            sims.install_everywhere("1.0.0")
            assert sims.site in cli(fleet, "device", "ls")
            out = cli(fleet, "cohort", "create", sims.site, "--select", f"site={sims.site}")
            assert "3 device(s) match" in out
            started = cli(
                fleet,
                "rollout",
                "start",
                "--cohort",
                sims.site,
                "--model",
                MODEL,
                "--version",
                "production",
                "--strategy",
                "canary",
                "--waves",
                "1,100%",
                "--bake",
                "0.2",
                "--timeout",
                "3",
                "--health-window",
                "0.5",
                "--health-max-error-rate",
                "0.2",
            )
            assert "rollout 1: sim 2.0.0" in started and "(2 wave(s)), running" in started
            health = json.loads(cli(fleet, "rollout", "status", "1", "--json"))["health"]
            assert (health["window_s"], health["max_error_rate"]) == (0.5, 0.2)
            watched = cli(fleet, "rollout", "status", "1", "--watch", "--interval", "0.1")
            assert "succeeded" in watched
            assert "rolled out" in cli(fleet, "rollout", "status", "1")
            refused = runner.invoke(
                app, ["rollout", "pause", "1", "--server", fleet.url, "--token", fleet.token]
            )
            assert "rollout is succeeded: cannot pause" in str(refused.exception)
    finally:
        fleet.close()
