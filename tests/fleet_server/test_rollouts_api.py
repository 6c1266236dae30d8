"""The rollout API: approval, pause/resume/abort/rollback, illegal moves, aliases, conflicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_server.settings import FleetSettings
from fleet_server.simulator import Behaviour, VersionBehaviour
from tests.fleet_server.bundles import make_bundle
from tests.fleet_server.conftest import Fleet, Keys, start_fleet, unique_device
from tests.fleet_server.scenario import MODEL, SimFleet, bundles, sim_fleet

pytestmark = pytest.mark.integration


def post(fleet: Fleet, path: str, body: Any = None) -> Any:
    return fleet.http.post(path, json=body, headers=fleet.auth)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_operator_actions_follow_the_rollout_table(
    fleet: Fleet, keys: Keys, tmp_path: Path
) -> None:
    assert (
        fleet.upload(make_bundle(tmp_path, keys.private, name="m", version="1.0.0")).status_code
        == 201
    )
    fleet.http.put("/models/m/aliases/production", json={"version": "1.0.0"}, headers=fleet.auth)
    site = unique_device("site")
    fleet.register(unique_device(), site=site)
    assert post(fleet, "/cohorts", {"name": site, "selector": {"site": site}}).status_code == 201

    body = {
        "cohort": site,
        "model": "m",
        "version": "production",
        "require_approval": True,
        "strategy": {
            "kind": "canary",
            "waves": [{"size": {"kind": "count", "value": 1}, "bake_s": 60}],
        },
    }
    started = post(fleet, "/rollouts", body)
    assert started.status_code == 201, started.text
    rollout = started.json()
    assert (rollout["version"], rollout["status"]) == ("1.0.0", "awaiting_approval")
    assert [w["status"] for w in rollout["waves"]] == ["pending", "pending"]
    assert post(fleet, "/rollouts", body).status_code == 409  # one active rollout per cohort

    rid = rollout["id"]
    refused = post(fleet, f"/rollouts/{rid}/pause")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "rollout is awaiting_approval: cannot pause (allowed: abort, approve)"
    )
    for action, status in [
        ("approve", "running"),
        ("pause", "paused"),
        ("resume", "running"),
        ("abort", "aborted"),
    ]:
        answer = post(fleet, f"/rollouts/{rid}/{action}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == status
        assert (
            answer.json()["detail"] == f"{'roll_back' if action == 'rollback' else action} by admin"
        )
    final = post(fleet, f"/rollouts/{rid}/rollback")
    assert final.status_code == 409 and "aborted" in final.json()["detail"]
    spec = fleet.http.get(f"{fleet.url}/openapi.json").json()
    assert "/api/v1/rollouts/{rollout_id}/rollback" in spec["paths"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_strategies_and_unknown_versions_are_refused(fleet: Fleet) -> None:
    site = unique_device("site")
    assert post(fleet, "/cohorts", {"name": site, "selector": {"site": site}}).status_code == 201
    typo = post(
        fleet,
        "/rollouts",
        {
            "cohort": site,
            "model": "m",
            "version": "1.0.0",
            "strategy": {"kind": "canary", "waves": []},
        },
    )
    assert typo.status_code == 422
    unknown = post(fleet, "/rollouts", {"cohort": site, "model": "nope", "version": "1.0.0"})
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "model 'nope' is not registered"


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_only_an_admin_approves_a_rollout(fleet: Fleet, keys: Keys, tmp_path: Path) -> None:
    assert fleet.upload(make_bundle(tmp_path, keys.private, name="m")).status_code == 201
    site = unique_device("site")
    fleet.register(unique_device(), site=site)
    assert post(fleet, "/cohorts", {"name": site, "selector": {"site": site}}).status_code == 201
    tokens = {}
    for role in ("viewer", "operator", "admin"):
        created = post(fleet, "/tokens", {"name": f"{role}-{site}", "role": role})
        assert created.status_code == 201, created.text
        tokens[role] = {"Authorization": f"Bearer {created.json()['token']}"}
    body = {"cohort": site, "model": "m", "version": "1.0.0", "require_approval": True}
    started = fleet.http.post("/rollouts", json=body, headers=tokens["operator"])
    assert started.status_code == 201, started.text
    rid = started.json()["id"]

    for role, needed in (("viewer", "admin"), ("operator", "admin")):
        refused = fleet.http.post(f"/rollouts/{rid}/approve", headers=tokens[role])
        assert refused.status_code == 403
        assert (
            refused.json()["detail"] == f"operator '{role}-{site}' is a {role}; this needs {needed}"
        )
    view = fleet.http.get(f"/rollouts/{rid}", headers=tokens["viewer"]).json()
    assert view["status"] == "awaiting_approval"

    approved = fleet.http.post(f"/rollouts/{rid}/approve", headers=tokens["admin"])
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["detail"]) == (
        "running",
        f"approve by admin-{site}",
    )
    # The other actions stay an operator's: an operator pauses, a viewer may not.
    assert fleet.http.post(f"/rollouts/{rid}/pause", headers=tokens["viewer"]).status_code == 403
    paused = fleet.http.post(f"/rollouts/{rid}/pause", headers=tokens["operator"])
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    spec = fleet.http.get(f"{fleet.url}/openapi.json").json()
    assert "403" in spec["paths"]["/api/v1/rollouts/{rollout_id}/approve"]["post"]["responses"]


OLD, NEW = "1.0.0", "2.0.0"
ALL_AT_ONCE = {"kind": "all_at_once", "bake_s": 0.2, "timeout_s": 3.0}


@pytest.fixture
def fast_fleet(
    fleet_settings: FleetSettings, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """A fleet server whose executor ticks every 50 ms, with ``OLD`` and ``NEW`` uploaded."""
    running = start_fleet(fleet_settings.model_copy(update={"executor_interval_s": 0.05}))
    try:
        for tar in bundles(tmp_path_factory.mktemp("rollback-bundles"), keys.private, (OLD, NEW)):
            assert running.upload(tar).status_code == 201
        yield running
    finally:
        running.close()


def succeeded_rollout(sims: SimFleet, devices: int) -> int:
    """``devices`` simulated devices on ``OLD``, then a rollout of ``NEW`` that succeeds."""
    for _ in range(devices):
        sims.add(Behaviour(versions={OLD: VersionBehaviour(), NEW: VersionBehaviour()}))
    sims.install_everywhere(OLD)
    sims.create_cohort()
    rollout_id = sims.start_rollout(NEW, ALL_AT_ONCE)
    sims.wait_rollout(rollout_id, "succeeded")
    sims.wait_running(NEW, list(sims.devices))
    return rollout_id


def cohort_runs(fleet: Fleet, cohort: str) -> tuple[str, str]:
    view = fleet.http.get(f"/cohorts/{cohort}", headers=fleet.auth).json()
    return view["current_model"], view["current_version"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_succeeded_rollout_rolls_back_once_and_not_over_another_rollout(
    fast_fleet: Fleet,
) -> None:
    with sim_fleet(fast_fleet) as sims:
        first = succeeded_rollout(sims, 3)
        # Another rollout targets the cohort (waiting for approval): no rollback under it.
        second = sims.start_rollout(OLD, ALL_AT_ONCE, require_approval=True)
        refused = post(fast_fleet, f"/rollouts/{first}/rollback")
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            f"cohort {sims.cohort!r} already has active rollout {second}"
        )
        assert sims.rollout(first)["status"] == "succeeded"

        assert post(fast_fleet, f"/rollouts/{second}/abort").status_code == 200
        rolled = post(fast_fleet, f"/rollouts/{first}/rollback")
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["status"] == "rolling_back"
        twice = post(fast_fleet, f"/rollouts/{first}/rollback")
        assert twice.status_code == 409
        assert twice.json()["detail"].startswith("rollout is rolling_back: cannot roll_back")

        sims.wait_rollout(first, "rolled_back")
        sims.wait_running(OLD, list(sims.devices))
        for device_id in sims.devices:
            assert sims.told(device_id) == [
                (OLD, False, None),
                (NEW, False, None),
                (OLD, True, None),
            ]
        assert cohort_runs(fast_fleet, sims.cohort) == (MODEL, OLD)
        again = post(fast_fleet, f"/rollouts/{first}/rollback")
        assert again.status_code == 409
        assert again.json()["detail"] == (
            "rollout is rolled_back: cannot roll_back (allowed: none: it is final)"
        )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_only_the_cohorts_latest_succeeded_rollout_rolls_back(fast_fleet: Fleet) -> None:
    with sim_fleet(fast_fleet) as sims:
        first = succeeded_rollout(sims, 2)
        second = sims.start_rollout(OLD, ALL_AT_ONCE)  # back to OLD, as a rollout of its own
        sims.wait_rollout(second, "succeeded")
        refused = post(fast_fleet, f"/rollouts/{first}/rollback")
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            f"rollout {first} is not the latest of cohort {sims.cohort!r}, which runs "
            f"{MODEL} {OLD}: roll back that one instead"
        )
        assert post(fast_fleet, f"/rollouts/{second}/rollback").status_code == 200
        sims.wait_rollout(second, "rolled_back")
        sims.wait_running(NEW, list(sims.devices))
        assert cohort_runs(fast_fleet, sims.cohort) == (MODEL, NEW)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_rollout_of_the_same_version_again_is_the_one_to_roll_back(fast_fleet: Fleet) -> None:
    """The cohort runs what both rollouts installed; only the later one rolls back (to the
    version it replaced, the same one), not the earlier one over it."""
    with sim_fleet(fast_fleet) as sims:
        first = succeeded_rollout(sims, 2)
        second = sims.start_rollout(NEW, ALL_AT_ONCE)
        assert sims.wait_rollout(second, "succeeded")["previous_version"] == NEW
        refused = post(fast_fleet, f"/rollouts/{first}/rollback")
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            f"rollout {first} is not the latest of cohort {sims.cohort!r}: rollout {second} "
            "succeeded after it; roll back that one instead"
        )
        assert sims.rollout(first)["status"] == "succeeded"
        assert post(fast_fleet, f"/rollouts/{second}/rollback").status_code == 200
        sims.wait_rollout(second, "rolled_back")
        assert cohort_runs(fast_fleet, sims.cohort) == (MODEL, NEW)
