"""Operator roles, self-enrolment, labels and cohorts, model versions and aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fleet_server.bundles import make_bundle
from tests.fleet_server.conftest import Fleet, Keys, unique_device

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_roles_viewer_operator_admin(fleet: Fleet) -> None:
    tokens = {}
    for role in ("viewer", "operator"):
        response = fleet.http.post("/tokens", json={"name": role, "role": role}, headers=fleet.auth)
        assert response.status_code == 201, response.text
        tokens[role] = response.json()["token"]
    assert fleet.http.get("/devices", headers=bearer(tokens["viewer"])).status_code == 200
    denied = fleet.http.post(
        "/cohorts", json={"name": "c", "selector": {}}, headers=bearer(tokens["viewer"])
    )
    assert denied.status_code == 403
    assert denied.json()["detail"] == "operator 'viewer' is a viewer; this needs operator"
    allowed = fleet.http.post(
        "/cohorts", json={"name": "c", "selector": {}}, headers=bearer(tokens["operator"])
    )
    assert allowed.status_code == 201
    assert fleet.http.get("/tokens", headers=bearer(tokens["operator"])).status_code == 403
    listed = fleet.http.get("/tokens", headers=fleet.auth).json()
    assert [(t["name"], t["role"]) for t in listed] == [
        ("operator", "operator"),
        ("viewer", "viewer"),
    ]


def test_enrolment_token_gives_per_device_credentials(fleet: Fleet) -> None:
    grant = fleet.http.post(
        "/enrolment-tokens",
        json={"name": "berlin", "labels": {"site": "berlin"}, "max_uses": 1},
        headers=fleet.auth,
    )
    assert grant.status_code == 201, grant.text
    device_id = unique_device()
    body = {"device_id": device_id, "profile": "x86-64/avx512-vnni", "labels": {"tier": "canary"}}
    enrolled = fleet.http.post("/enrol", json=body, headers=bearer(grant.json()["token"]))
    assert enrolled.status_code == 201, enrolled.text
    assert fleet.device(device_id)["labels"] == {"site": "berlin", "tier": "canary"}
    device_token = enrolled.json()["token"]
    assert fleet.http.get("/devices", headers=bearer(device_token)).status_code == 401

    again = fleet.http.post(
        "/enrol", json={**body, "device_id": unique_device()}, headers=bearer(grant.json()["token"])
    )
    assert again.status_code == 401
    assert "used 1 time(s)" in again.json()["detail"]

    cohort = {"name": "berlin-canary", "selector": {"site": "berlin", "tier": "canary"}}
    created = fleet.http.post("/cohorts", json=cohort, headers=fleet.auth).json()
    assert created["devices"] == [device_id]
    patched = fleet.http.patch(
        f"/devices/{device_id}/labels", json={"remove": ["tier"]}, headers=fleet.auth
    )
    assert patched.json()["labels"] == {"site": "berlin"}
    shown = fleet.http.get("/cohorts/berlin-canary", headers=fleet.auth).json()
    assert shown["devices"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_versions_in_semver_order_with_aliases(fleet: Fleet, keys: Keys, tmp_path: Path) -> None:
    for version in ("1.2.0", "1.10.0", "1.10.0-rc.1"):
        assert (
            fleet.upload(make_bundle(tmp_path, keys.private, name="m", version=version)).status_code
            == 201
        )
    # (a non-semantic version cannot even be sealed: the manifest refuses it)
    aliased = fleet.http.put(
        "/models/m/aliases/production", json={"version": "1.2.0"}, headers=fleet.auth
    )
    assert aliased.status_code == 200, aliased.text
    view = aliased.json()
    assert [v["version"] for v in view["versions"]] == ["1.10.0", "1.10.0-rc.1", "1.2.0"]
    assert view["aliases"] == {"production": "1.2.0"}
    assert view["versions"][0]["artifacts"][0]["lineage"]["compiler_version"] == "test"
    missing = fleet.http.put("/models/m/aliases/x", json={"version": "9.9.9"}, headers=fleet.auth)
    assert missing.status_code == 404
