"""SIGKILL of a real agent process in every update state, then a restart.

The agent pauses in a chosen state through its test hook (``EDGEFLEET_AGENT_TEST_PAUSE_IN``,
see ``edge_agent.update.testhook``); the test kills it there with SIGKILL and restarts it.
Expected, per the transition table: before the swap the deployment resumes and commits the
new model; from the swap on it rolls back to the old one. Either way the model served, the
last report's ``active_version`` and ``state.json`` agree.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.update.testhook import PAUSE_ENV
from edgefleet.bundle import SigningKey
from edgefleet.protocol.messages import DeploymentPhase as Phase
from edgefleet.protocol.messages import Report
from tests.edge_agent.helpers import (
    ArtifactServer,
    FleetSide,
    build_bundle,
    desired_for,
    serve_artifacts,
    wait_for,
)
from tests.edge_agent.test_agent_process import TOKEN, AgentProcess, make_agent
from tests.support.services import Mosquitto

pytestmark = pytest.mark.e2e

TERMINAL = {Phase.COMMITTED, Phase.ROLLED_BACK, Phase.FAILED}

# (pause in, on the restart pause in (or None), version deployed, outcome, version served after)
# Generous bounds for process-level waits: each returns as soon as its condition holds, and a
# loaded 2-core machine can take many seconds to start an agent (imports, model load).
SLOW = 60.0

CHAIN: list[tuple[str, str | None, str, Phase, str]] = [
    ("downloading", None, "2.0.0", Phase.COMMITTED, "2.0.0"),
    ("verifying", None, "3.0.0", Phase.COMMITTED, "3.0.0"),
    ("staging", None, "4.0.0", Phase.COMMITTED, "4.0.0"),
    ("activating", None, "5.0.0", Phase.ROLLED_BACK, "4.0.0"),
    ("validating", None, "6.0.0", Phase.ROLLED_BACK, "4.0.0"),
    ("validating", "rolling_back", "7.0.0", Phase.ROLLED_BACK, "4.0.0"),
]


@pytest.fixture
def agent_dir(tmp_path: Path, key_dir: Path) -> Path:
    data_dir = tmp_path / "agent"
    (data_dir / "trusted_keys").mkdir(parents=True)
    (data_dir / "trusted_keys" / "fleet.pub").write_bytes((key_dir / "trusted.pub").read_bytes())
    return data_dir


@pytest.fixture
def started() -> Iterator[list[AgentProcess]]:
    agents: list[AgentProcess] = []
    yield agents
    for agent in agents:
        if agent.process is not None:
            agent.process.kill()
            agent.process.wait(timeout=10)


def _final(fleet: FleetSide, deployment_id: str) -> Report | None:
    reports = [r for r in fleet.of("report") if r.deployment_id == deployment_id]
    return reports[-1] if reports and reports[-1].phase in TERMINAL else None


def test_sigkill_in_every_update_state_ends_on_a_consistent_reported_model(
    tmp_path: Path,
    agent_dir: Path,
    mosquitto: Mosquitto,
    signing_key: SigningKey,
    started: list[AgentProcess],
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    build = tmp_path / "build"

    def launch(pause: str | None) -> AgentProcess:
        agent = make_agent(tmp_path, agent_dir, device, server.url, "--mqtt", mosquitto.url)
        if pause is not None:
            agent.env[PAUSE_ENV] = pause
        started.append(agent)
        agent.start()
        return agent

    with (
        serve_artifacts(ArtifactServer(token=TOKEN)) as server,
        FleetSide(mosquitto.url, device) as fleet,
    ):
        bundles = {}
        for major in range(1, 8):
            bundle = build_bundle(build, signing_key, version=f"{major}.0.0", weights_version=major)
            server.add(major, bundle)
            bundles[f"{major}.0.0"] = (major, bundle)

        agent = launch(f"{CHAIN[0][0]}@{CHAIN[0][2]}")
        fleet.publish_desired(desired_for(bundles["1.0.0"][1], 1, "dep-1.0.0"))
        wait_for(lambda: _final(fleet, "dep-1.0.0"), timeout=SLOW, what="v1 committed")

        for step, (pause, pause_again, version, outcome, serving) in enumerate(CHAIN):
            artifact_id, bundle = bundles[version]
            deployment_id = f"dep-{version}"
            fleet.publish_desired(desired_for(bundle, artifact_id, deployment_id))
            marker = agent_dir / f"paused-in-{pause}"
            wait_for(marker.exists, timeout=SLOW, what=f"pause in {pause} ({agent.log()[-2000:]})")
            assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
            marker.unlink()
            if pause_again is not None:  # killed a second time, while rolling back
                agent = launch(f"{pause_again}@{version}")
                again = agent_dir / f"paused-in-{pause_again}"
                wait_for(again.exists, timeout=SLOW, what=f"pause in {pause_again}")
                assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
                again.unlink()
            following = CHAIN[step + 1] if step + 1 < len(CHAIN) else None
            agent = launch(f"{following[0]}@{following[2]}" if following else None)
            wait_for(
                lambda: _final(fleet, deployment_id),  # noqa: B023
                timeout=SLOW,
                what=f"{version} ends ({agent.log()[-2000:]})",
            )
            final = _final(fleet, deployment_id)
            assert final is not None
            assert final.phase is outcome, (pause, final)
            assert final.active_version == serving, (pause, final)
            status, health = agent.request("GET", "/v1/health")
            assert (status, health["version"]) == (200, serving), pause
            state = json.loads((agent_dir / "state.json").read_text())
            assert state["active"]["version"] == serving, pause
            assert state["deployment"]["state"] == outcome.value, pause
            if outcome is Phase.ROLLED_BACK:
                assert deployment_id in state["failed"]
            wait_for(
                lambda: fleet.of("status")[-1].active_version == serving,  # noqa: B023
                timeout=SLOW,
                what="status",
            )
        assert agent.stop() == 0
        fleet.clear_retained()
