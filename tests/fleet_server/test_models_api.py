"""Model registry over real HTTP: upload, verification failures, duplicates, auth, download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fleet_server.settings import FleetSettings
from tests.fleet_server.bundles import make_bundle, rewrite_member
from tests.fleet_server.conftest import Fleet, Keys, start_fleet

pytestmark = pytest.mark.integration


def test_info_needs_no_token_and_names_the_broker(fleet: Fleet) -> None:
    response = fleet.http.get("/info")
    assert response.status_code == 200
    assert response.json() == {"version": "0.1.0", "mqtt_url": fleet.mqtt_url}
    spec = fleet.http.get(f"{fleet.url}/openapi.json").json()
    assert "/api/v1/models" in spec["paths"]
    assert "application/x-tar" in spec["paths"]["/api/v1/models"]["post"]["requestBody"]["content"]


def test_a_valid_bundle_is_stored_listed_and_downloadable(fleet: Fleet, bundle_tar: Path) -> None:
    response = fleet.upload(bundle_tar)
    assert response.status_code == 201, response.text
    digest = hashlib.sha256(bundle_tar.read_bytes()).hexdigest()
    body = response.json()
    assert body == {
        "artifact_id": body["artifact_id"],
        "model": "tiny",
        "version": "1.0.0",
        "profile": "x86-64/avx512-vnni",
        "precision": "fp32",
        "format": "onnx",
        "sha256": digest,
        "size": bundle_tar.stat().st_size,
        "lineage": body["lineage"],
    }
    assert len(body["lineage"]["source_model_sha256"]) == 64
    assert body["lineage"]["compiler_version"] == "test"
    stored = fleet.settings.artifacts_dir / f"{digest}.tar"
    assert stored.read_bytes() == bundle_tar.read_bytes()
    assert list(fleet.settings.tmp_dir.iterdir()) == []

    listed = fleet.http.get("/models", headers=fleet.auth)
    assert listed.status_code == 200 and listed.json() == [body]

    download = fleet.http.get(f"/artifacts/{body['artifact_id']}", headers=fleet.auth)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/x-tar"
    assert download.content == bundle_tar.read_bytes()


def test_a_flipped_byte_is_refused_naming_the_file(
    fleet: Fleet, bundle_tar: Path, tmp_path: Path
) -> None:
    tampered = rewrite_member(bundle_tar, tmp_path / "tampered.tar", "model.onnx", flip_byte=True)
    response = fleet.upload(tampered)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("model.onnx: sha256 mismatch")
    assert fleet.http.get("/models", headers=fleet.auth).json() == []
    assert list(fleet.settings.artifacts_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("member", "flip", "expected"),
    [
        ("signature.json", False, "signature.json: missing"),
        ("manifest.json", True, "manifest.json"),
        ("golden.npz", False, "golden.npz: listed in the manifest but missing"),
    ],
)
def test_an_unsigned_or_altered_bundle_is_refused(
    fleet: Fleet, bundle_tar: Path, tmp_path: Path, member: str, flip: bool, expected: str
) -> None:
    broken = rewrite_member(
        bundle_tar, tmp_path / "broken.tar", member, flip_byte=flip, drop=not flip
    )
    response = fleet.upload(broken)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(expected)


def test_a_bundle_signed_by_an_untrusted_key_is_refused(
    fleet: Fleet, keys: Keys, tmp_path: Path
) -> None:
    foreign = make_bundle(tmp_path, keys.other_private)
    response = fleet.upload(foreign)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("signature.json: signed by key") and "not trusted" in detail


def test_garbage_is_refused_as_not_a_tar(fleet: Fleet, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 100)
    response = fleet.upload(junk)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("bundle.tar: not a valid bundle tar archive")


def test_the_same_model_version_and_profile_twice_is_a_conflict(
    fleet: Fleet, bundle_tar: Path
) -> None:
    assert fleet.upload(bundle_tar).status_code == 201
    again = fleet.upload(bundle_tar)
    assert again.status_code == 409
    assert "'tiny' version '1.0.0'" in again.json()["detail"]
    assert len(fleet.http.get("/models", headers=fleet.auth).json()) == 1


def test_requests_without_the_operator_token_are_refused(fleet: Fleet, bundle_tar: Path) -> None:
    assert fleet.upload(bundle_tar, token=None).status_code == 401
    assert fleet.upload(bundle_tar, token="wrong-token").status_code == 401
    missing = fleet.http.get("/models")
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert fleet.http.get("/devices").status_code == 401
    assert fleet.http.get("/models", headers=fleet.auth).json() == []


def test_a_device_token_downloads_artifacts_but_cannot_operate(
    fleet: Fleet, bundle_tar: Path
) -> None:
    artifact_id = fleet.upload(bundle_tar).json()["artifact_id"]
    device_token = fleet.register("dl-1")
    as_device = {"Authorization": f"Bearer {device_token}"}
    download = fleet.http.get(f"/artifacts/{artifact_id}", headers=as_device)
    assert download.status_code == 200 and download.content == bundle_tar.read_bytes()
    assert (
        fleet.http.get(
            f"/artifacts/{artifact_id}", headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    assert fleet.http.get("/models", headers=as_device).status_code == 401
    assert fleet.http.get("/artifacts/9999", headers=fleet.auth).status_code == 404


def test_a_body_over_the_upload_limit_is_refused(
    fleet_settings: FleetSettings, bundle_tar: Path
) -> None:
    fleet = start_fleet(fleet_settings.model_copy(update={"max_upload_bytes": 1024}))
    try:
        response = fleet.upload(bundle_tar)
        assert response.status_code == 413
        assert "limit is 1024" in response.json()["detail"]
        assert list(fleet.settings.artifacts_dir.iterdir()) == []
    finally:
        fleet.close()
