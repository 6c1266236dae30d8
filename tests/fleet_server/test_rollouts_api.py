"""The rollout API: approval, pause/resume/abort/rollback, illegal moves, aliases, conflicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fleet_server.bundles import make_bundle
from tests.fleet_server.conftest import Fleet, Keys, unique_device

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
