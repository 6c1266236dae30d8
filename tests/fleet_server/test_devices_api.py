"""Devices over real HTTP and a real broker: enrolment, desired state published retained."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefleet.codec import decode
from edgefleet.protocol.messages import DesiredState
from edgefleet.protocol.topics import Channel, topic
from fleet_server.settings import FleetSettings
from fleet_server.tokens import hash_token
from tests.fleet_server.bundles import OTHER_PROFILE, make_bundle
from tests.fleet_server.conftest import Fleet, Keys, MqttProbe, start_fleet, unique_device

pytestmark = pytest.mark.integration


def test_register_returns_a_token_stored_only_hashed(fleet: Fleet) -> None:
    device_id = unique_device()
    token = fleet.register(device_id, site="lab", floor="2")
    assert len(token) >= 32
    view = fleet.device(device_id)
    assert view == {
        "device_id": device_id,
        "profile": "x86-64/avx512-vnni",
        "labels": {"site": "lab", "floor": "2"},
        "online": False,
        "last_seen": None,
        "reported_model": None,
        "reported_version": None,
        "desired_model": None,
        "desired_version": None,
        "deployment_phase": None,
        "deployment_detail": "",
        "last_telemetry": None,
        "predictions_received": 0,
    }
    from sqlalchemy import select

    from fleet_server.devices.tables import DeviceRow

    with fleet.server.runtime.sessions() as session:
        stored = session.scalar(
            select(DeviceRow.token_sha256).where(DeviceRow.device_id == device_id)
        )
    assert stored == hash_token(token) and token not in stored
    listed = fleet.http.get("/devices", headers=fleet.auth).json()
    assert [item["device_id"] for item in listed] == [device_id]


def test_an_unknown_profile_is_refused_naming_it(fleet: Fleet) -> None:
    response = fleet.http.post(
        "/devices", json={"device_id": "d1", "profile": "acme/toaster"}, headers=fleet.auth
    )
    assert response.status_code == 422
    assert "'acme/toaster'" in response.json()["detail"]
    assert fleet.http.get("/devices", headers=fleet.auth).json() == []


def test_an_existing_id_is_a_conflict_and_a_bad_id_is_refused(fleet: Fleet) -> None:
    fleet.register("d1")
    again = fleet.http.post(
        "/devices", json={"device_id": "d1", "profile": OTHER_PROFILE}, headers=fleet.auth
    )
    assert again.status_code == 409 and "'d1'" in again.json()["detail"]
    bad = fleet.http.post(
        "/devices", json={"device_id": "a/b", "profile": OTHER_PROFILE}, headers=fleet.auth
    )
    assert bad.status_code == 422
    assert fleet.http.get("/devices/nobody", headers=fleet.auth).status_code == 404


def test_assign_publishes_the_retained_desired_state(
    fleet: Fleet,
    bundle_tar: Path,
    keys: Keys,
    tmp_path: Path,
    probe_factory: Callable[[str], MqttProbe],
) -> None:
    artifact = fleet.upload(bundle_tar).json()
    # The same model built for another profile must not be picked for this device.
    other = fleet.upload(make_bundle(tmp_path, keys.private, profile=OTHER_PROFILE)).json()
    device_id = unique_device()
    fleet.register(device_id)

    response = fleet.http.put(
        f"/devices/{device_id}/desired",
        json={"model": "tiny", "version": "1.0.0"},
        headers=fleet.auth,
    )
    assert response.status_code == 200, response.text
    desired = decode(DesiredState, response.json())
    assert desired.artifact_url == f"/api/v1/artifacts/{artifact['artifact_id']}"
    assert desired.artifact_url != f"/api/v1/artifacts/{other['artifact_id']}"
    assert (desired.sha256, desired.size) == (artifact["sha256"], artifact["size"])

    # A subscriber that arrives afterwards still gets it: it is retained.
    probe = probe_factory(fleet.mqtt_url)
    probe.subscribe(topic(device_id, Channel.DESIRED))
    message = probe.receive(topic(device_id, Channel.DESIRED))
    assert message.retain
    assert decode(DesiredState, json.loads(message.payload)) == desired

    view = fleet.device(device_id)
    assert (view["desired_model"], view["desired_version"]) == ("tiny", "1.0.0")
    assert view["reported_version"] is None  # never shown before the device reports it


def test_assign_without_an_artifact_for_the_profile_is_not_found(
    fleet: Fleet, bundle_tar: Path
) -> None:
    fleet.upload(bundle_tar)
    fleet.register("pi-1", profile=OTHER_PROFILE)
    response = fleet.http.put(
        "/devices/pi-1/desired", json={"model": "tiny", "version": "1.0.0"}, headers=fleet.auth
    )
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "'tiny'" in detail and "'1.0.0'" in detail and OTHER_PROFILE in detail
    missing = fleet.http.put(
        "/devices/ghost/desired", json={"model": "tiny", "version": "1.0.0"}, headers=fleet.auth
    )
    assert missing.status_code == 404 and "'ghost'" in missing.json()["detail"]


def test_a_restarted_server_republishes_desired_state_the_broker_lost(
    fleet_settings: FleetSettings, bundle_tar: Path, probe_factory: Callable[[str], MqttProbe]
) -> None:
    device_id = unique_device()
    desired_topic = topic(device_id, Channel.DESIRED)
    fleet = start_fleet(fleet_settings)
    try:
        fleet.upload(bundle_tar)
        fleet.register(device_id)
        body = {"model": "tiny", "version": "1.0.0"}
        desired = fleet.http.put(
            f"/devices/{device_id}/desired", json=body, headers=fleet.auth
        ).json()
    finally:
        fleet.close()
    eraser = probe_factory(fleet_settings.mqtt_url or "")
    eraser.publish(
        desired_topic, b"", retain=True
    )  # as if the broker restarted without persistence

    fleet = start_fleet(fleet_settings)
    try:
        late = probe_factory(fleet.mqtt_url)
        late.subscribe(desired_topic)
        message = late.receive(desired_topic)
        assert message.retain and json.loads(message.payload) == desired
    finally:
        fleet.close()
