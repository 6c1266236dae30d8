"""Rollout scenarios: simulated devices (real paho clients speaking the agent's protocol), a
real fleet server, the real Mosquitto, on SQLite and PostgreSQL.

Scenarios with real agent processes follow once the agent commits through validating.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_server.settings import FleetSettings
from fleet_server.simulator import Behaviour, VersionBehaviour
from tests.fleet_server.conftest import Fleet, Keys, start_fleet
from tests.fleet_server.scenario import MODEL, SimFleet, bundles, sim_fleet, wait_for

pytestmark = pytest.mark.integration

OLD, NEW = "1.0.0", "2.0.0"
FAST = {"bake_s": 0.4, "timeout_s": 3.0}
GATES: dict[str, Any] = {
    "success": [
        {"kind": "installed", "min_fraction": 0.7},
        {"kind": "error_rate", "max": 0.05},
        {"kind": "latency_ratio", "max": 1.5},
        {"kind": "drift", "max": 0.25},  # PSI: above 0.25 is a major shift
    ],
    "abort": [{"kind": "failed_fraction", "min": 0.5}],
}


def canary(*percents: float, gates: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": "canary",
        "waves": [{"size": {"kind": "percent", "value": p}, **FAST} for p in percents],
        "gates": gates or GATES,
    }


@pytest.fixture(scope="module")
def sim_bundles(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> list[Path]:
    return bundles(tmp_path_factory.mktemp("sim-bundles"), keys.private, (OLD, NEW))


@pytest.fixture
def fast_settings(fleet_settings: FleetSettings) -> FleetSettings:
    return fleet_settings.model_copy(update={"executor_interval_s": 0.05})


@pytest.fixture
def fleet(fast_settings: FleetSettings, sim_bundles: list[Path]) -> Iterator[Fleet]:
    running = start_fleet(fast_settings)
    try:
        for tar in sim_bundles:
            assert running.upload(tar).status_code == 201
        yield running
    finally:
        running.close()


def prepared(sims: SimFleet, count: int, new: VersionBehaviour) -> None:
    behaviour = Behaviour(versions={OLD: VersionBehaviour(), NEW: new})
    for _ in range(count):
        sims.add(behaviour)
    sims.install_everywhere(OLD)
    sims.create_cohort()


def wave_devices(view: dict[str, Any], index: int) -> set[str]:
    return {d["device_id"] for d in view["devices"] if d["wave"] == index}


def test_healthy_canary_promotes_by_itself(fleet: Fleet) -> None:
    with sim_fleet(fleet) as sims:
        prepared(sims, 10, VersionBehaviour())
        fleet.register(f"{sims.site}-pi", profile="raspberry-pi/4b", site=sims.site)
        rollout_id = sims.start_rollout(NEW, canary(10, 50, 100))
        view = sims.wait_rollout(rollout_id, "succeeded")

        assert [w["status"] for w in view["waves"]] == ["succeeded"] * 3
        assert [w["target_devices"] for w in view["waves"]] == [2, 4, 5]  # of 11, ceil
        assert view["previous_version"] == OLD
        assert [d["device_id"] for d in view["no_artifact"]] == [f"{sims.site}-pi"]
        assert view["counts"] == {"succeeded": 10, "no_artifact": 1}
        gates = {g["gate"]: g for g in view["waves"][0]["gates"]}
        assert gates["latency_ratio"]["ok"] and gates["latency_ratio"]["value"] == pytest.approx(1)
        sims.wait_running(NEW, list(sims.devices))
        for device_id in sims.devices:
            assert sims.told(device_id) == [(OLD, False, None), (NEW, False, None)]

        cohort = fleet.http.get(f"/cohorts/{sims.cohort}", headers=fleet.auth).json()
        assert (cohort["current_model"], cohort["current_version"]) == (MODEL, NEW)
        late = sims.add(Behaviour(versions={NEW: VersionBehaviour()}))
        sims.wait_running(NEW, [late.device_id])


def test_an_erroring_model_is_rolled_back_at_the_first_wave(fleet: Fleet) -> None:
    failing_first_wave(fleet, VersionBehaviour(error_rate=0.5))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_model_returning_nan_is_rolled_back_at_the_first_wave(fleet: Fleet) -> None:
    failing_first_wave(fleet, VersionBehaviour(nan_rate=0.3))


def failing_first_wave(fleet: Fleet, bad: VersionBehaviour) -> None:
    with sim_fleet(fleet) as sims:
        prepared(sims, 10, bad)
        rollout_id = sims.start_rollout(NEW, canary(10, 50, 100))
        view = sims.wait_rollout(rollout_id, "rolled_back")

        assert [w["status"] for w in view["waves"]] == ["failed", "cancelled", "cancelled"]
        failed = {g["gate"] for g in view["waves"][0]["gates"] if not g["ok"]}
        assert failed == {"error_rate"}
        first = wave_devices(view, 0)
        assert len(first) == 1
        sims.wait_running(OLD, list(sims.devices))
        for device_id in sims.devices:
            told = sims.told(device_id)
            if device_id in first:
                assert told == [(OLD, False, None), (NEW, False, None), (OLD, True, None)]
            else:
                assert told == [(OLD, False, None)], "a later-wave device was told the new model"


def test_three_times_the_latency_is_stopped_by_the_latency_gate(fleet: Fleet) -> None:
    with sim_fleet(fleet) as sims:
        prepared(sims, 5, VersionBehaviour(p95_ms=6.0))
        rollout_id = sims.start_rollout(NEW, canary(20, 100))
        view = sims.wait_rollout(rollout_id, "rolled_back")
        gates = {g["gate"]: g for g in view["waves"][0]["gates"]}
        assert not gates["latency_ratio"]["ok"]
        assert gates["latency_ratio"]["value"] == pytest.approx(3.0)
        assert gates["error_rate"]["ok"] and gates["installed"]["ok"]


@pytest.mark.parametrize(("output_mean", "outcome"), [(0.52, "succeeded"), (0.8, "rolled_back")])
def test_the_drift_gate_holds_outputs_that_moved_against_the_previous_version(
    fleet: Fleet, output_mean: float, outcome: str
) -> None:
    """The previous version's outputs are ~N(0.5, 0.1): a fifth of a std off passes, three
    stds off is a major PSI shift and rolls back at the first wave."""
    with sim_fleet(fleet) as sims:
        prepared(sims, 5, VersionBehaviour(output_mean=output_mean))
        rollout_id = sims.start_rollout(NEW, canary(20, 100))
        view = sims.wait_rollout(rollout_id, outcome)
        drift = {g["gate"]: g for g in view["waves"][0]["gates"]}["drift"]
        assert drift["threshold"] == 0.25
        if outcome == "succeeded":
            assert drift["ok"] and drift["value"] < 0.1
        else:
            assert not drift["ok"] and drift["value"] > 1.0
            assert [w["status"] for w in view["waves"]] == ["failed", "cancelled"]
        assert drift["detail"] == f"largest PSI of any feature {drift['value']:.3f}"


def test_a_waves_gates_judge_only_that_waves_devices(fleet: Fleet) -> None:
    """Wave 2 of 2 + 4 devices: its 4 new devices err at 30% on the new version, wave 1's stay
    clean. Pooled over all 6 the error rate would be 20% and pass the 25% gate; judged on the
    wave's own devices it is 30% and the wave fails."""
    with sim_fleet(fleet) as sims:
        prepared(sims, 6, VersionBehaviour())
        pause_after = {**GATES, "on_success": "pause"}
        strategy = {
            "kind": "canary",
            "waves": [
                {"size": {"kind": "count", "value": 2}, **FAST, "gates": pause_after},
                {"size": {"kind": "percent", "value": 100}, **FAST},
            ],
            "gates": {**GATES, "success": [{"kind": "error_rate", "max": 0.25}]},
        }
        rollout_id = sims.start_rollout(NEW, strategy)
        view = sims.wait_rollout(rollout_id, "paused")
        first = wave_devices(view, 0)
        assert len(first) == 2 and view["waves"][0]["status"] == "succeeded"
        erring = Behaviour(
            versions={OLD: VersionBehaviour(), NEW: VersionBehaviour(error_rate=0.3)}
        )
        for device_id, device in sims.devices.items():
            if device_id not in first:
                device.behaviour = erring
        resumed = fleet.http.post(f"/rollouts/{rollout_id}/resume", headers=fleet.auth)
        assert resumed.status_code == 200, resumed.text

        view = sims.wait_rollout(rollout_id, "rolled_back")
        second = view["waves"][1]
        assert second["status"] == "failed"
        assert second["metrics"]["requests"] > 0
        assert second["metrics"]["errors"] / second["metrics"]["requests"] == pytest.approx(0.3)
        assert wave_devices(view, 1) == set(sims.devices) - first
        sims.wait_running(OLD, list(sims.devices))


@pytest.mark.parametrize(("agreement", "outcome"), [(0.97, "succeeded"), (0.6, "rolled_back")])
def test_shadow_then_promote_only_above_the_agreement_threshold(
    fleet: Fleet, agreement: float, outcome: str
) -> None:
    with sim_fleet(fleet) as sims:
        prepared(sims, 4, VersionBehaviour(agreement=agreement))
        strategy = {
            "kind": "shadow_then_promote",
            "shadow": {"size": {"kind": "percent", "value": 100}, **FAST},
            "min_agreement": 0.9,
            "promote": [{"size": {"kind": "percent", "value": 100}, **FAST}],
            "gates": GATES,
        }
        rollout_id = sims.start_rollout(NEW, strategy)
        view = sims.wait_rollout(rollout_id, outcome)
        shadow = view["waves"][0]
        assert shadow["shadow"] and shadow["metrics"]["shadow_agreement"] == pytest.approx(
            agreement
        )
        for device_id in sims.devices:
            told = sims.told(device_id)
            assert told[1] == (OLD, False, NEW)  # the candidate ran in shadow first
            if outcome == "succeeded":
                assert told[2:] == [(NEW, False, None)]
            else:
                assert all(version == OLD for version, _, _ in told), told
        sims.wait_running(NEW if outcome == "succeeded" else OLD, list(sims.devices))


def test_an_offline_device_does_not_hold_the_wave_and_converges_later(fleet: Fleet) -> None:
    with sim_fleet(fleet) as sims:
        prepared(sims, 4, VersionBehaviour())
        sleeper = next(iter(sims.devices.values()))
        sleeper.stop()
        fleet.wait_device(sleeper.device_id, lambda v: not v["online"], "offline")
        strategy = {"kind": "all_at_once", "bake_s": 0.3, "timeout_s": 1.0, "gates": GATES}
        rollout_id = sims.start_rollout(NEW, strategy)
        view = sims.wait_rollout(rollout_id, "succeeded")
        assert view["counts"] == {"succeeded": 3, "timed_out": 1}

        sleeper.start()
        sims.wait_running(NEW, list(sims.devices))
        wait_for(
            lambda: sims.rollout(rollout_id)["counts"] == {"succeeded": 4},
            "the late device's deployment to succeed",
        )


def test_a_server_restart_mid_rollout_finishes_it(
    fleet: Fleet, fast_settings: FleetSettings
) -> None:
    with sim_fleet(fleet) as sims:
        prepared(sims, 6, VersionBehaviour())
        slow = {
            "kind": "canary",
            "gates": GATES,
            "waves": [
                {"size": {"kind": "percent", "value": p}, "bake_s": 1.0, "timeout_s": 3.0}
                for p in (34, 100)
            ],
        }
        rollout_id = sims.start_rollout(NEW, slow)
        wait_for(
            lambda: sims.rollout(rollout_id)["waves"][0]["status"] == "baking", "wave 1 to bake"
        )
        fleet.server.stop()
        restarted = start_fleet(fast_settings)
        try:
            sims.fleet = restarted
            view = sims.wait_rollout(rollout_id, "succeeded")
            assert [w["status"] for w in view["waves"]] == ["succeeded", "succeeded"]
            sims.wait_running(NEW, list(sims.devices))
        finally:
            restarted.close()
            sims.fleet = fleet
        for device_id in sims.devices:
            assert sims.told(device_id) == [(OLD, False, None), (NEW, False, None)]
