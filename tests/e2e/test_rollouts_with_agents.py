"""Rollout scenarios with real agent processes: one fleet server process, four agents in a
device-like interpreter, the real Mosquitto (see :mod:`tests.e2e.rollout_fleet` for the models).
Gates: healthy canary waves promote by themselves; a NaN model aborts at the first wave; a
three times slower model is stopped by the latency gate; shadow-then-promote promotes only a
candidate that agrees with the current model.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import pytest

from tests.e2e.rollout_fleet import (
    AGENTS,
    AGREEING,
    BAD,
    DISAGREEING,
    GATES,
    HEALTH,
    HEAVY,
    HEAVY_OLD,
    HEAVY_SLOW,
    MODEL,
    NEW,
    OLD,
    Fleet,
    Server,
    Traffic,
    canary,
    examples,
    new_fleet,
    start_agent,
    stop_fleet,
    wave_devices,
)
from tests.edge_agent.helpers import FleetSide
from tests.support.processes import run_cli, wait_until
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_healthy_canary_waves_promote_by_themselves(fleet: Fleet, server: Server) -> None:
    with Traffic(fleet.agents, examples(negative=True)) as traffic:
        rollout_id = fleet.start_rollout(
            NEW, canary({"kind": "count", "value": 1}, {"kind": "percent", "value": 100}), HEALTH
        )
        view = fleet.wait_rollout(rollout_id, "succeeded", 60)
    assert traffic.sent > 0
    assert [w["status"] for w in view["waves"]] == ["succeeded", "succeeded"]
    assert [w["target_devices"] for w in view["waves"]] == [1, AGENTS - 1]  # per wave
    assert len(wave_devices(view, 0)) == 1 and len(wave_devices(view, 1)) == AGENTS - 1
    assert view["previous_version"] == OLD
    assert view["counts"] == {"succeeded": AGENTS}
    first_gates = {g["gate"]: g for g in view["waves"][0]["gates"]}
    assert first_gates["error_rate"]["ok"] and first_gates["error_rate"]["value"] == 0

    for agent in fleet.agents:
        reported = fleet.device(agent.device_id)
        assert (reported["reported_model"], reported["reported_version"]) == (MODEL, NEW)
        assert reported["deployment_phase"] == "committed"
        assert agent.serving() == NEW
        assert f"(tiny {NEW}): validating" in agent.process.output()
        assert f"validated tiny {NEW}" in agent.process.output()
    assert fleet.api("GET", f"/cohorts/{fleet.cohort}")["current_version"] == NEW
    # A device that joins the cohort afterwards gets its version (not through the rollout).
    late = start_agent(fleet, server, f"{fleet.cohort}-late")
    fleet.agents.append(late)
    wait_until(lambda: late.serving() == NEW, 60, "the late device to serve 2.0.0", fleet.processes)

    # A rollout that succeeded can still be taken back: its devices return to 1.0.0, and the
    # cohort's version with them, so the late device is taken back too (an explicit rollback:
    # an agent accepts no other downgrade).
    run_cli("rollout", "rollback", str(rollout_id), "--server", fleet.url, "--token", fleet.token)
    view = fleet.wait_rollout(rollout_id, "rolled_back", 60)
    assert view["counts"] == {"rolled_back": AGENTS}
    assert fleet.api("GET", f"/cohorts/{fleet.cohort}")["current_version"] == OLD
    wait_until(
        lambda: all(a.serving() == OLD for a in fleet.agents),
        30,
        "every agent back on 1.0.0",
        fleet.processes,
    )
    for agent in fleet.agents:
        reported = fleet.device(agent.device_id)
        assert (reported["reported_version"], reported["desired_version"]) == (OLD, OLD)


def test_an_aborted_rollout_stops_where_it_is_and_shows_what_devices_really_did(
    fleet: Fleet,
) -> None:
    strategy = canary(
        {"kind": "count", "value": 1},
        {"kind": "count", "value": 2},
        {"kind": "percent", "value": 100},
    )
    strategy["waves"][1]["bake_s"] = 30.0  # the abort comes while the second wave runs
    with Traffic(fleet.agents, examples(negative=True)):
        rollout_id = fleet.start_rollout(NEW, strategy, HEALTH)
        wait_until(
            lambda: fleet.rollout(rollout_id)["waves"][1]["status"] != "pending",
            60,
            "the second wave to start",
            fleet.processes,
        )
        run_cli("rollout", "abort", str(rollout_id), "--server", fleet.url, "--token", fleet.token)
        view = fleet.rollout(rollout_id)
        told = wave_devices(view, 0) | wave_devices(view, 1)
        # The devices already told keep 2.0.0 (their outcome is recorded when they report);
        # the others are never told.
        wait_until(
            lambda: fleet.rollout(rollout_id)["counts"] == {"succeeded": 2},
            60,
            "the second wave's devices to be recorded as they commit",
            fleet.processes,
        )
        time.sleep(2.0)  # a few cohort reconciliations (every second): nobody is dragged back
        view = fleet.rollout(rollout_id)

    assert view["status"] == "aborted"
    assert [w["status"] for w in view["waves"]] == ["succeeded", "cancelled", "cancelled"]
    assert len(told) == 2 and wave_devices(view, 2) == set()
    for agent in fleet.agents:
        reported = fleet.device(agent.device_id)
        version = NEW if agent.device_id in told else OLD
        assert agent.serving() == version
        assert (reported["reported_version"], reported["desired_version"]) == (version, version)
        assert reported["deployment_phase"] == "committed", reported


def test_a_nan_model_aborts_at_the_first_wave_and_later_waves_never_get_it(
    fleet: Fleet, mosquitto: Mosquitto
) -> None:
    with ExitStack() as stack:
        listeners = {
            a.device_id: stack.enter_context(FleetSide(mosquitto.url, a.device_id, auto_ack=False))
            for a in fleet.agents
        }
        # Negative features: 1.0.0 answers normally, 2.1.0 answers NaN.
        with Traffic(fleet.agents, examples(negative=True)):
            rollout_id = fleet.start_rollout(
                BAD,
                canary(
                    {"kind": "count", "value": 1},
                    {"kind": "count", "value": 2},
                    {"kind": "percent", "value": 100},
                ),
                HEALTH,
            )
            view = fleet.wait_rollout(rollout_id, "rolled_back", 60)
        (first,) = wave_devices(view, 0)
        by_id = {agent.device_id: agent for agent in fleet.agents}
        wait_until(lambda: by_id[first].serving() == OLD, 20, "the canary to serve 1.0.0 again")
        wait_until(
            lambda: (
                fleet.device(first)["desired_version"] == OLD
                and fleet.device(first)["deployment_phase"] == "committed"
            ),
            20,
            "the canary to take the server's rollback deployment",
            fleet.processes,
        )
        reports = {device_id: listener.of("report") for device_id, listener in listeners.items()}

    assert [w["status"] for w in view["waves"]] == ["failed", "cancelled", "cancelled"]
    assert wave_devices(view, 1) == wave_devices(view, 2) == set()
    tripped = [g["gate"] for g in view["waves"][0]["gates"] if g["ok"]]
    assert tripped == ["failed_fraction"], view["waves"][0]["gates"]

    # The canary rolled back by itself (its own reports, before the server said anything) ...
    bad = [r for r in reports[first] if r.version == BAD]
    phases = [r.phase.value for r in bad]
    assert phases[-3:] == ["validating", "rolling_back", "rolled_back"], phases
    assert bad[-1].active_version == OLD and "NaN outputs" in bad[-1].detail, bad[-1]
    after = reports[first][reports[first].index(bad[-1]) + 1 :]
    assert after and all(r.version == OLD for r in after), after
    log = by_id[first].process.output()
    self_rollback = log.index(f"(tiny {BAD}): rolled_back: validating:")
    assert log.index("desired state received: tiny 1.0.0", self_rollback) > self_rollback
    # ... and the server shows only what it reported: 1.0.0, committed on the rollback.
    reported = fleet.device(first)
    assert (reported["reported_version"], reported["desired_version"]) == (OLD, OLD), reported

    for agent in fleet.agents:
        if agent.device_id == first:
            continue
        assert reports[agent.device_id] == [], reports[agent.device_id]
        reported = fleet.device(agent.device_id)
        assert (reported["reported_version"], reported["desired_version"]) == (OLD, OLD), reported
        assert BAD not in reported["deployment_detail"]
        assert agent.serving() == OLD
        assert BAD not in agent.process.output()


def test_a_three_times_slower_model_is_stopped_by_the_latency_gate(server: Server) -> None:
    fleet = new_fleet(server, model=HEAVY, version=HEAVY_OLD)
    try:
        gates = {
            "success": [
                {"kind": "installed", "min_fraction": 1.0},
                {"kind": "latency_ratio", "max": 1.5},
            ],
            "abort": [{"kind": "failed_fraction", "min": 0.5}],
        }
        strategy = {
            "kind": "canary",
            "waves": [
                {"size": {"kind": "count", "value": 1}, "bake_s": 3.0, "timeout_s": 30.0},
                {"size": {"kind": "percent", "value": 100}, "bake_s": 1.0, "timeout_s": 30.0},
            ],
            "gates": gates,
        }
        with Traffic(fleet.agents, examples(negative=False)) as traffic:
            # The baseline: the current version's latency on these devices before the rollout.
            wait_until(lambda: traffic.sent >= 40 * AGENTS, 60, "baseline traffic")
            time.sleep(1.0)  # a few telemetry windows (0.3 s each) reach the server
            # The device does not judge latency here: the server's gate must stop it.
            rollout_id = fleet.start_rollout(HEAVY_SLOW, strategy, HEALTH, model=HEAVY)
            view = fleet.wait_rollout(rollout_id, "rolled_back", 90)
        (first,) = wave_devices(view, 0)
        by_id = {agent.device_id: agent for agent in fleet.agents}
        wait_until(lambda: by_id[first].serving() == HEAVY_OLD, 20, "the canary to roll back")
    finally:
        stop_fleet(fleet)

    first_wave = view["waves"][0]
    assert [w["status"] for w in view["waves"]] == ["failed", "cancelled"]
    gates_seen = {g["gate"]: g for g in first_wave["gates"]}
    latency = gates_seen["latency_ratio"]
    assert not latency["ok"] and latency["value"] > 1.5, first_wave
    assert gates_seen["installed"]["ok"], first_wave  # it installed fine: only latency stops it
    metrics = first_wave["metrics"]
    assert metrics["p95_ms"] > metrics["baseline_p95_ms"] > 0, metrics
    assert wave_devices(view, 1) == set()
    for agent in fleet.agents:
        if agent.device_id != first:
            assert HEAVY_SLOW not in agent.process.output()


def shadow_then_promote(min_agreement: float) -> dict[str, Any]:
    return {
        "kind": "shadow_then_promote",
        "shadow": {"size": {"kind": "percent", "value": 50}, "bake_s": 1.5, "timeout_s": 30.0},
        "sample_rate": 1.0,
        "min_agreement": min_agreement,
        "promote": [{"size": {"kind": "percent", "value": 100}, "bake_s": 0.5, "timeout_s": 30.0}],
        "gates": GATES,
    }


def test_shadow_then_promote_promotes_a_candidate_that_agrees(fleet: Fleet) -> None:
    with Traffic(fleet.agents, examples(mixed=True)):
        rollout_id = fleet.start_rollout(AGREEING, shadow_then_promote(0.9), HEALTH)
        view = fleet.wait_rollout(rollout_id, "succeeded", 60)

    shadow_wave, promote_wave = view["waves"]
    assert shadow_wave["shadow"] and shadow_wave["status"] == "succeeded"
    agreement = {g["gate"]: g for g in shadow_wave["gates"]}["shadow_agreement"]
    assert agreement["ok"] and agreement["value"] == 1.0, shadow_wave
    assert shadow_wave["metrics"]["shadow_compared"] > 0
    assert len(wave_devices(view, 0)) == AGENTS // 2
    assert promote_wave["status"] == "succeeded" and len(wave_devices(view, 1)) == AGENTS
    assert view["counts"] == {"succeeded": AGENTS}
    for agent in fleet.agents:
        reported = fleet.device(agent.device_id)
        assert (reported["reported_version"], reported["deployment_phase"]) == (
            AGREEING,
            "committed",
        )
        assert agent.serving() == AGREEING


def test_shadow_then_promote_stops_a_candidate_that_disagrees(
    fleet: Fleet, mosquitto: Mosquitto
) -> None:
    with ExitStack() as stack:
        listeners = {
            a.device_id: stack.enter_context(FleetSide(mosquitto.url, a.device_id, auto_ack=False))
            for a in fleet.agents
        }
        with Traffic(fleet.agents, examples(mixed=True)):
            rollout_id = fleet.start_rollout(DISAGREEING, shadow_then_promote(0.9), HEALTH)
            view = fleet.wait_rollout(rollout_id, "rolled_back", 60)
            shadowed = wave_devices(view, 0)
            wait_until(
                lambda: all(fleet.device(d)["deployment_phase"] == "committed" for d in shadowed),
                20,
                "the shadowed devices to drop the candidate",
                fleet.processes,
            )
            time.sleep(1.0)  # telemetry after the shadow is gone
        telemetry = {d: listener.of("telemetry") for d, listener in listeners.items()}

    shadow_wave = view["waves"][0]
    assert [w["status"] for w in view["waves"]] == ["failed", "cancelled"]
    agreement = {g["gate"]: g for g in shadow_wave["gates"]}["shadow_agreement"]
    assert not agreement["ok"] and agreement["value"] < 0.9, shadow_wave
    assert shadow_wave["metrics"]["shadow_compared"] > 0
    assert len(shadowed) == AGENTS // 2 and wave_devices(view, 1) == set()
    for agent in fleet.agents:
        reported = fleet.device(agent.device_id)
        assert (reported["reported_version"], reported["desired_version"]) == (OLD, OLD)
        assert agent.serving() == OLD  # the candidate was never installed anywhere
        windows = telemetry[agent.device_id]
        assert all(t.active_version == OLD for t in windows)
        if agent.device_id in shadowed:  # it ran in shadow, and no longer does
            assert any(t.shadow is not None and t.shadow.version == DISAGREEING for t in windows)
            assert windows[-1].shadow is None, windows[-1]
        else:
            assert all(t.shadow is None for t in windows)
