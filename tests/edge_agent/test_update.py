"""The updater against a real loopback artifact server, with real bundles and onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ModelSlot
from edge_agent.state import StateStore
from edge_agent.update import Updater, UpdaterConfig
from edgefleet.bundle import SigningKey, VerifyKey
from edgefleet.protocol.messages import DeploymentPhase as Phase
from edgefleet.protocol.messages import Report
from hardware_profiles import HardwareProfile
from tests.edge_agent.helpers import (
    ArtifactServer,
    BuiltBundle,
    build_bundle,
    desired_for,
    expected,
    serve_artifacts,
    wait_for,
)

pytestmark = pytest.mark.integration

TOKEN = "device-token"
PHASES = [Phase.DOWNLOADING, Phase.VERIFYING, Phase.STAGING, Phase.ACTIVE]


@dataclass
class Rig:
    server: ArtifactServer
    updater: Updater
    slot: ModelSlot
    reports: list[Report]
    data_dir: Path
    workdir: Path
    key: SigningKey

    def publish(self, artifact_id: int, bundle: BuiltBundle) -> None:
        self.server.add(artifact_id, bundle)

    def phases(self) -> list[Phase]:
        return [report.phase for report in self.reports]

    def fresh_updater(self, backend: OnnxRuntimeBackend) -> tuple[Updater, ModelSlot]:
        slot = ModelSlot()
        updater = Updater(
            config=self.updater.config,
            backend=backend,
            slot=slot,
            store=StateStore(self.data_dir),
            report=self.reports.append,
        )
        return updater, slot


@pytest.fixture
def rig(
    tmp_path: Path,
    profile: HardwareProfile,
    backend: OnnxRuntimeBackend,
    signing_key: SigningKey,
    verify_key: VerifyKey,
) -> Iterator[Rig]:
    data_dir = tmp_path / "agent"
    data_dir.mkdir()
    with serve_artifacts(ArtifactServer(token=TOKEN)) as server:
        slot = ModelSlot()
        reports: list[Report] = []
        updater = Updater(
            config=UpdaterConfig(
                server_url=server.url,
                token=TOKEN,
                profile=profile,
                data_dir=data_dir,
                trusted_keys=(verify_key,),
                retry_initial=0.2,
            ),
            backend=backend,
            slot=slot,
            store=StateStore(data_dir),
            report=reports.append,
        )
        yield Rig(server, updater, slot, reports, data_dir, tmp_path / "build", signing_key)


def _prediction(rig: Rig) -> tuple[str, np.ndarray]:
    model = rig.slot.current()
    assert model is not None
    x = np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32)
    (outputs,) = model.run_examples([x])
    return model.version, outputs[0]


def _install_v1(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.ACTIVE
    rig.reports.clear()


def test_good_bundle_goes_active_serves_and_survives_a_restart(
    rig: Rig, backend: OnnxRuntimeBackend
) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.ACTIVE
    assert rig.phases() == PHASES
    assert rig.reports[-1].detail == "provider CPUExecutionProvider"
    assert all(r.deployment_id == "dep-1" and r.version == "1.0.0" for r in rig.reports)
    version, output = _prediction(rig)
    assert version == "1.0.0"
    np.testing.assert_allclose(output, expected(np.array([[0.5, -1, 2, 0]]), 1)[0], rtol=1e-5)
    assert rig.server.requests[-1] == ("/api/v1/artifacts/1", f"Bearer {TOKEN}")
    assert list((rig.data_dir / "downloads").iterdir()) == []

    state = json.loads((rig.data_dir / "state.json").read_text())
    assert state["active"]["version"] == "1.0.0"
    assert state["deployment"]["phase"] == "active"

    restarted, slot = rig.fresh_updater(backend)
    assert slot.current() is None
    restored = restarted.restore()
    assert restored is not None and slot.current() is restored
    assert (restored.version, restored.deployment_id) == ("1.0.0", "dep-1")

    # The retained desired state arriving again after the restart changes nothing.
    rig.reports.clear()
    assert restarted.apply(desired_for(bundle, 1, "dep-1")) is Phase.ACTIVE
    assert rig.reports == []


def test_upgrade_swaps_the_model_and_keeps_one_previous(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(rig.workdir, rig.key, version="2.0.0", weights_version=2)
    rig.publish(2, bundle)
    assert rig.updater.apply(desired_for(bundle, 2, "dep-2")) is Phase.ACTIVE
    assert rig.phases() == PHASES
    assert _prediction(rig)[0] == "2.0.0"
    assert len(list((rig.data_dir / "models").iterdir())) == 2


def test_flipped_byte_in_model_fails_naming_it_and_keeps_serving(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(
        rig.workdir, rig.key, version="2.0.0", weights_version=2, flip_model_byte=True
    )
    rig.publish(2, bundle)
    desired = desired_for(bundle, 2, "dep-2")
    assert rig.updater.apply(desired) is Phase.FAILED
    assert rig.phases() == [Phase.DOWNLOADING, Phase.VERIFYING, Phase.FAILED]
    assert rig.reports[-1].detail.startswith("model.onnx: sha256 mismatch")
    assert _prediction(rig)[0] == "1.0.0"

    # The same deployment again (retained desired on reconnect) is not retried.
    assert rig.updater.apply(desired) is Phase.FAILED
    assert len(rig.reports) == 3
    state = json.loads((rig.data_dir / "state.json").read_text())
    assert state["failed"]["dep-2"].startswith("model.onnx")
    assert state["active"]["version"] == "1.0.0"


def test_bundle_signed_by_an_untrusted_key_fails_naming_signature(
    rig: Rig, stranger_key: SigningKey
) -> None:
    bundle = build_bundle(rig.workdir, stranger_key, version="1.0.0")
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-x")) is Phase.FAILED
    assert rig.reports[-1].detail.startswith("signature.json: signed by key")
    assert "not trusted" in rig.reports[-1].detail
    assert rig.slot.current() is None


def test_bundle_for_another_profile_fails(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(rig.workdir, rig.key, version="2.0.0", profile="raspberry-pi/4b")
    rig.publish(2, bundle)
    assert rig.updater.apply(desired_for(bundle, 2, "dep-2")) is Phase.FAILED
    detail = rig.reports[-1].detail
    assert detail.startswith("manifest.json: built for profile raspberry-pi/4b")
    assert "x86-64/avx512-vnni" in detail
    assert _prediction(rig)[0] == "1.0.0"


def test_golden_mismatch_fails_at_staging(rig: Rig) -> None:
    _install_v1(rig)
    bundle = build_bundle(
        rig.workdir, rig.key, version="2.0.0", weights_version=2, golden_offset=0.5
    )
    rig.publish(2, bundle)
    assert rig.updater.apply(desired_for(bundle, 2, "dep-2")) is Phase.FAILED
    assert rig.phases() == [Phase.DOWNLOADING, Phase.VERIFYING, Phase.STAGING, Phase.FAILED]
    assert rig.reports[-1].detail.startswith("golden.npz: sample 0 differs")
    assert _prediction(rig)[0] == "1.0.0"


def test_wrong_tar_hash_or_identity_fails(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    rig.publish(1, bundle)
    bad_hash = desired_for(bundle, 1, "dep-a").model_copy(update={"sha256": "0" * 64})
    assert rig.updater.apply(bad_hash) is Phase.FAILED
    assert rig.reports[-1].detail.startswith("bundle tar: sha256 mismatch")
    other_version = desired_for(bundle, 1, "dep-b").model_copy(update={"version": "9.9.9"})
    assert rig.updater.apply(other_version) is Phase.FAILED
    assert "bundle is tiny 1.0.0, desired is tiny 9.9.9" in rig.reports[-1].detail


def test_download_errors(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    missing = desired_for(bundle, 7, "dep-404")
    assert rig.updater.apply(missing) is Phase.FAILED
    assert rig.reports[-1].detail.startswith("download: HTTP 404")
    assert "dep-404" in rig.updater.state.failed

    rig.publish(1, bundle)
    short = desired_for(bundle, 1, "dep-size").model_copy(update={"size": bundle.size - 10})
    assert rig.updater.apply(short) is Phase.FAILED
    assert "more than the announced" in rig.reports[-1].detail

    rig.server.status_override[1] = 503
    flaky = desired_for(bundle, 1, "dep-503")
    assert rig.updater.apply(flaky) is Phase.FAILED
    assert "HTTP 503" in rig.reports[-1].detail and "retrying in" in rig.reports[-1].detail
    assert "dep-503" not in rig.updater.state.failed


def test_transient_failure_is_retried_by_the_worker_with_backoff(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    rig.publish(1, bundle)
    rig.server.status_override[1] = 503
    rig.updater.start()
    try:
        rig.updater.submit(desired_for(bundle, 1, "dep-1"))
        wait_for(lambda: Phase.FAILED in rig.phases())
        del rig.server.status_override[1]
        wait_for(lambda: rig.slot.current() is not None)
    finally:
        rig.updater.stop()
    assert rig.phases()[-4:] == PHASES


def test_same_artifact_under_a_new_deployment_is_adopted(rig: Rig) -> None:
    bundle = build_bundle(rig.workdir, rig.key, version="1.0.0")
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.ACTIVE
    rig.reports.clear()
    downloads = len(rig.server.requests)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-again")) is Phase.ACTIVE
    assert [(r.phase, r.detail) for r in rig.reports] == [
        (Phase.ACTIVE, "already serving this artifact")
    ]
    assert len(rig.server.requests) == downloads
    current = rig.slot.current()
    assert current is not None and current.deployment_id == "dep-again"
