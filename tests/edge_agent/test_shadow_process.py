"""Shadow mode in a real agent process under a real memory limit.

The agent runs as ``edgefleet agent run`` against Mosquitto; once it serves 1.0.0, the kernel
limits its address space (``prlimit``: RLIMIT_AS = what it uses now + 128 MiB). A shadow
candidate with a 64 MiB weight tensor does not fit beside the active model (about 4 x its
file size resident), so the agent must say so in a failed shadow report and not start it,
while the active model keeps answering. A small candidate under the same limit does start:
the limit refuses what does not fit, not every shadow.
"""

from __future__ import annotations

import hashlib
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from edgefleet.bundle import SigningKey, pack_bundle, seal_bundle
from edgefleet.protocol.messages import Artifact, DeploymentPhase, DesiredState, ShadowSpec
from tests.edge_agent.helpers import (
    IN_FEATURES,
    ArtifactServer,
    BuiltBundle,
    FleetSide,
    build_bundle,
    desired_for,
    expected,
    manifest_for,
    save_x_to_y,
    serve_artifacts,
    wait_for,
    weights,
)
from tests.edge_agent.test_agent_process import (  # fixtures re-exported for pytest
    TOKEN,
    AgentProcess,
    make_agent,
)
from tests.edge_agent.test_agent_process import agent_dir as agent_dir
from tests.edge_agent.test_agent_process import cleanup as cleanup
from tests.edge_agent.test_agent_process import device as device
from tests.support.services import Mosquitto

pytestmark = pytest.mark.e2e

HEADROOM = 128 << 20
BALLAST_MB = 64


def write_ballast_onnx(path: Path, megabytes: int) -> None:
    """y = x @ W + b + 0 * sum(ballast): tiny v1's answers, with ``megabytes`` of weights."""
    from onnx import helper, numpy_helper

    w, b = weights(1)
    ballast = np.ones((megabytes << 18,), np.float32)  # 4 bytes each
    init = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "B"),
        numpy_helper.from_array(ballast, "ballast"),
        numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["clean"]),
        helper.make_node("ReduceSum", ["ballast"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["clean", "nothing"], ["y"]),
    ]
    save_x_to_y(path, "ballast", nodes, init)


def ballast_bundle(workdir: Path, key: SigningKey, version: str) -> BuiltBundle:
    directory = workdir / f"ballast-{version}"
    directory.mkdir(parents=True)
    write_ballast_onnx(directory / "model.onnx", BALLAST_MB)
    inputs = np.random.default_rng(7).normal(size=(4, IN_FEATURES)).astype(np.float32)
    np.savez(directory / "golden.npz", inputs=inputs, outputs=expected(inputs, 1))
    manifest = seal_bundle(directory, manifest_for("tiny", version), key)
    tar = pack_bundle(directory, workdir / f"{directory.name}.tar")
    data = tar.read_bytes()
    return BuiltBundle(tar, hashlib.sha256(data).hexdigest(), len(data), manifest)


def with_shadow(desired: DesiredState, bundle: BuiltBundle, artifact_id: int) -> DesiredState:
    artifact = Artifact(
        model=bundle.manifest.name,
        version=bundle.manifest.version,
        artifact_url=f"/api/v1/artifacts/{artifact_id}",
        sha256=bundle.sha256,
        size=bundle.size,
    )
    return replace(desired, shadow=ShadowSpec(artifact=artifact, sample_rate=1.0))


def reports_of(fleet: FleetSide, deployment_id: str) -> list[Any]:
    return [r for r in fleet.of("report") if r.deployment_id == deployment_id]


def test_a_shadow_that_does_not_fit_under_the_process_memory_limit_is_refused(
    tmp_path: Path,
    agent_dir: Path,
    device: str,
    mosquitto: Mosquitto,
    signing_key: SigningKey,
    cleanup: list[AgentProcess],
) -> None:
    build = tmp_path / "build"
    v1 = build_bundle(build, signing_key, version="1.0.0", weights_version=1)
    heavy = ballast_bundle(build, signing_key, "1.1.0")
    light = build_bundle(build, signing_key, version="1.2.0", weights_version=2)
    assert heavy.size > BALLAST_MB << 20
    with (
        serve_artifacts(ArtifactServer(token=TOKEN, mqtt_url=mosquitto.url)) as server,
        FleetSide(mosquitto.url, device) as fleet,
    ):
        for artifact_id, bundle in enumerate((v1, heavy, light), start=1):
            server.add(artifact_id, bundle)
        agent = make_agent(tmp_path, agent_dir, device, server.url, "--mqtt", mosquitto.url)
        cleanup.append(agent)
        agent.start()
        desired = desired_for(v1, 1, "dep-1")
        fleet.publish_desired(desired)
        wait_for(
            lambda: any(r.phase is DeploymentPhase.COMMITTED for r in fleet.of("report")),
            timeout=30,
            what="1.0.0 committed",
        )
        assert agent.process is not None
        process = psutil.Process(agent.process.pid)
        limit = process.memory_info().vms + HEADROOM
        process.rlimit(psutil.RLIMIT_AS, (limit, limit))

        fleet.publish_desired(with_shadow(desired_for(v1, 1, "dep-2"), heavy, 2))
        wait_for(lambda: reports_of(fleet, "dep-2"), timeout=60, what="a shadow report")
        (refused,) = reports_of(fleet, "dep-2")
        assert refused.phase is DeploymentPhase.FAILED
        assert refused.detail.startswith("shadow: both models need about")
        assert "address-space limit (RLIMIT_AS)" in refused.detail
        assert "not starting the shadow" in refused.detail
        assert refused.active_version == "1.0.0"
        assert "not starting the shadow" in agent.log()

        for n in range(20):  # the active model keeps serving, under the same limit
            status, body = agent.request("POST", "/v1/predict", {"input": [n, 0.5, 0.5, 0.5]})
            assert (status, body["version"]) == (200, "1.0.0"), body
        wait_for(
            lambda: fleet.of("telemetry") and fleet.of("telemetry")[-1].requests > 0,
            what="telemetry after the refusal",
        )
        assert all(t.shadow is None for t in fleet.of("telemetry"))

        fleet.publish_desired(with_shadow(desired_for(v1, 1, "dep-3"), light, 3))
        wait_for(lambda: "shadow: running tiny 1.2.0" in agent.log(), timeout=30, what="shadow")
        for n in range(40):
            agent.request("POST", "/v1/predict", {"input": [0.1, 0.2, 0.3, n / 40]})
        wait_for(
            lambda: any(
                t.shadow is not None and t.shadow.version == "1.2.0" and t.shadow.compared > 0
                for t in fleet.of("telemetry")
            ),
            timeout=30,
            what="the small shadow running under the same limit",
        )
        assert [r.phase for r in reports_of(fleet, "dep-3")] == [DeploymentPhase.COMMITTED]
        assert agent.stop(signal.SIGTERM) == 0
        fleet.clear_retained()
