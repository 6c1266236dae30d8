"""Shadow mode: a candidate beside the active model, off the serving path, with a memory check."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_agent.api import PredictionService
from edge_agent.errors import UpdateError
from edge_agent.outbox import Outbox
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.shadow import ShadowRunner, check_memory
from edge_agent.telemetry import Metrics
from edge_agent.update import StateStore, Updater
from edgefleet.protocol.messages import Artifact, DesiredState, Report, ShadowSpec
from edgefleet.protocol.messages import DeploymentPhase as Phase
from hardware_profiles import HardwareProfile
from tests.edge_agent.conftest import Rig
from tests.edge_agent.helpers import BuiltBundle, build_bundle, desired_for

pytestmark = pytest.mark.integration


def _with_shadow(desired: DesiredState, bundle: BuiltBundle, artifact_id: int) -> DesiredState:
    artifact = Artifact(
        model=bundle.manifest.name,
        version=bundle.manifest.version,
        artifact_url=f"/api/v1/artifacts/{artifact_id}",
        sha256=bundle.sha256,
        size=bundle.size,
    )
    return replace(desired, shadow=ShadowSpec(artifact=artifact, sample_rate=1.0))


def _service(rig: Rig, runner: ShadowRunner | None) -> PredictionService:
    return PredictionService(
        slot=rig.slot,
        outbox=Outbox(rig.data_dir / "outbox.sqlite"),
        metrics=Metrics(),
        shadow=runner,
    )


def _deploy_with_shadow(
    rig: Rig, *, weights: int, trap: str | None = None, updater: Updater | None = None
) -> list[ShadowRunner | None]:
    v1 = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    candidate = build_bundle(
        rig.workdir, rig.key, version="1.1.0", weights_version=weights, trap=trap
    )
    rig.publish(1, v1)
    rig.publish(2, candidate)
    runners: list[ShadowRunner | None] = []
    target = updater or rig.updater
    target._on_shadow = runners.append
    desired = _with_shadow(desired_for(v1, 1, "dep-1"), candidate, 2)
    assert target.apply(desired) is Phase.COMMITTED
    return runners


def test_a_shadow_with_the_same_weights_agrees_fully(rig: Rig) -> None:
    (runner,) = _deploy_with_shadow(rig, weights=1)
    assert runner is not None and runner.candidate.version == "1.1.0"
    service = _service(rig, runner)
    rng = np.random.default_rng(0)
    for _ in range(40):
        answer = service.predict({"input": rng.normal(size=4).tolist()})
        assert answer["version"] == "1.0.0"  # the shadow never answers
    assert runner.drain()
    stats = runner.take()
    assert (stats.model, stats.version, stats.compared, stats.errors) == ("tiny", "1.1.0", 40, 0)
    assert stats.top1_agreement == 1.0
    assert stats.mean_abs_diff == pytest.approx(0.0, abs=1e-6)
    assert stats.latency_p50_ms is not None and stats.latency_p95_ms is not None
    assert runner.take().compared == 0  # a new window
    runner.stop()
    service.outbox.close()


def test_a_different_shadow_reports_disagreement_and_its_errors_never_reach_the_caller(
    rig: Rig,
) -> None:
    (runner,) = _deploy_with_shadow(rig, weights=2, trap="error")
    assert runner is not None
    service = _service(rig, runner)
    for _ in range(10):
        service.predict({"input": [0.5, 0.5, 0.5, 0.5]})
    for _ in range(5):  # x0 >= 2 makes the candidate fail in onnxruntime, not the active model
        assert service.predict({"input": [5.0, 0.0, 0.0, 0.0]})["version"] == "1.0.0"
    assert runner.drain()
    stats = runner.take()
    assert (stats.compared, stats.errors) == (10, 5)
    assert stats.mean_abs_diff is not None and stats.mean_abs_diff > 0.5  # bias differs by 1
    runner.stop()
    service.outbox.close()


def test_a_shadow_added_to_the_served_model_runs_before_the_deployment_is_reported_committed(
    rig: Rig,
) -> None:
    """The server starts judging a shadow from the moment it hears the deployment committed:
    by then the candidate must already be running."""
    v1 = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    candidate = build_bundle(rig.workdir, rig.key, version="1.1.0", weights_version=2)
    rig.publish(1, v1)
    rig.publish(2, candidate)
    assert rig.updater.apply(desired_for(v1, 1, "dep-1")) is Phase.COMMITTED
    running_at_commit: list[bool] = []
    report = rig.updater._report

    def watch(message: Report) -> None:
        if message.deployment_id == "dep-2" and message.phase is Phase.COMMITTED:
            running_at_commit.append(rig.updater.shadow is not None)
        report(message)

    rig.updater._report = watch
    assert rig.updater.apply(_with_shadow(desired_for(v1, 1, "dep-2"), candidate, 2)) is (
        Phase.COMMITTED
    )
    assert running_at_commit == [True]
    assert rig.reports[-1].detail == "already serving this artifact"
    assert rig.updater.shadow is not None
    rig.updater.shadow.stop()


def _updater_without_shadow_memory(rig: Rig, backend: OnnxRuntimeBackend) -> Updater:
    """The rig's updater, but one whose memory check never has room for a shadow."""
    config = dataclasses.replace(rig.updater.config, shadow_memory_factor=1e12)
    return Updater(
        config=config,
        backend=backend,
        slot=rig.slot,
        store=StateStore(rig.data_dir),
        report=rig.reports.append,
    )


def test_a_shadow_that_cannot_run_fails_its_deployment_instead_of_committing_it(
    rig: Rig, backend: OnnxRuntimeBackend
) -> None:
    updater = _updater_without_shadow_memory(rig, backend)
    v1 = build_bundle(rig.workdir, rig.key, version="1.0.0", weights_version=1)
    candidate = build_bundle(rig.workdir, rig.key, version="1.1.0", weights_version=1)
    rig.publish(1, v1)
    rig.publish(2, candidate)
    assert updater.apply(desired_for(v1, 1, "dep-1")) is Phase.COMMITTED
    for deployment in ("dep-2", "dep-3"):  # a candidate that failed once fails again at once
        updater.apply(_with_shadow(desired_for(v1, 1, deployment), candidate, 2))
        mine = [r for r in rig.reports if r.deployment_id == deployment]
        assert [r.phase for r in mine] == [Phase.FAILED], mine
        assert mine[0].detail.startswith("shadow:")


def test_a_shadow_that_does_not_fit_in_memory_is_refused_and_reported(
    rig: Rig, backend: OnnxRuntimeBackend
) -> None:
    updater = _updater_without_shadow_memory(rig, backend)
    runners = _deploy_with_shadow(rig, weights=1, updater=updater)
    assert runners == []
    last = rig.reports[-1]
    assert (last.phase, last.model, last.version) == (Phase.FAILED, "tiny", "1.1.0")
    assert last.detail.startswith("shadow: both models need about")
    assert "not starting the shadow" in last.detail
    assert last.active_version == "1.0.0"
    current = rig.slot.current()
    assert current is not None and current.version == "1.0.0"


def test_check_memory_uses_the_smaller_of_os_and_profile_memory(profile: HardwareProfile) -> None:
    check_memory(1 << 20, 1 << 20, profile, factor=4, available=1 << 30)
    with pytest.raises(UpdateError, match="available memory is 7 MiB"):
        check_memory(1 << 20, 1 << 20, profile, factor=4, available=7 << 20)
    small = replace(profile, hardware=replace(profile.hardware, memory_mb=2))
    with pytest.raises(UpdateError, match=f"profile {profile.tag} memory is 2 MiB"):
        check_memory(1 << 20, 0, small, factor=4, available=1 << 30)


def test_the_memory_check_reads_real_file_sizes(tmp_path: Path) -> None:
    from edge_agent.shadow import model_bytes

    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"x" * 24)
    assert model_bytes(tmp_path) == 1024
    assert model_bytes(tmp_path / "a.bin") == 1000
