"""The agent as a real process (``python -m edgefleet agent run``) against a real Mosquitto."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgefleet.protocol.messages import DeploymentPhase, DeviceState
from tests.edge_agent.helpers import (
    PROFILE,
    ArtifactServer,
    FleetSide,
    build_bundle,
    desired_for,
    serve_artifacts,
    wait_for,
)
from tests.support.services import Mosquitto

pytestmark = pytest.mark.e2e

TOKEN = "t0k3n"


@dataclass
class AgentProcess:
    data_dir: Path
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    addr: tuple[str, int] = ("", 0)
    logs: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        (self.data_dir / "agent.addr").unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgefleet", "agent", "run", *self.args],
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env},
        )
        log.close()
        addr_file = self.data_dir / "agent.addr"
        wait_for(
            lambda: addr_file.exists() or self.process is None or self.process.poll() is not None,
            timeout=60,
            what="agent.addr",
        )
        assert self.process.poll() is None, self.log()
        host, port = addr_file.read_text().strip().rsplit(":", 1)
        self.addr = (host, int(port))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(*self.addr, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code


@pytest.fixture
def device() -> str:
    return f"dev-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def agent_dir(tmp_path: Path, key_dir: Path) -> Path:
    data_dir = tmp_path / "agent"
    (data_dir / "trusted_keys").mkdir(parents=True)
    (data_dir / "trusted_keys" / "fleet.pub").write_bytes((key_dir / "trusted.pub").read_bytes())
    return data_dir


def make_agent(
    tmp_path: Path, data_dir: Path, device: str, server: str, *extra: str
) -> AgentProcess:
    args = [
        "--server", server,
        "--device-id", device,
        "--token", TOKEN,
        "--profile", PROFILE,
        "--data-dir", str(data_dir),
        "--listen", "127.0.0.1:0",
        "--telemetry-interval", "0.5",
        "--ack-timeout", "1",
        *extra,
    ]  # fmt: skip
    return AgentProcess(data_dir=data_dir, args=args, log_path=tmp_path / "agent.log")


@pytest.fixture
def cleanup() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.process is not None:
            agent.process.kill()
            agent.process.wait(timeout=10)


def test_online_status_is_retained_and_the_last_will_says_offline(
    tmp_path: Path,
    agent_dir: Path,
    device: str,
    mosquitto: Mosquitto,
    cleanup: list[AgentProcess],
) -> None:
    agent = make_agent(tmp_path, agent_dir, device, "http://127.0.0.1:9", "--mqtt", mosquitto.url)
    cleanup.append(agent)
    with FleetSide(mosquitto.url, device) as fleet:
        agent.start()
        wait_for(lambda: fleet.of("status"), timeout=15, what="online status")
        online = fleet.of("status")[-1]
        assert (online.state, online.profile) == (DeviceState.ONLINE, PROFILE)
        assert online.active_version is None
        with FleetSide(mosquitto.url, device) as late:
            wait_for(lambda: late.of("status"), what="retained status for a late subscriber")
            assert late.of("status")[0].state is DeviceState.ONLINE
            assert late.retained == [True]

        assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
        wait_for(
            lambda: fleet.of("status")[-1].state is DeviceState.OFFLINE,
            what="Last Will offline after the kill",
        )
        with FleetSide(mosquitto.url, device) as late:
            wait_for(lambda: late.of("status"), what="retained offline status")
            assert late.of("status")[0].state is DeviceState.OFFLINE
            assert late.retained == [True]
        fleet.clear_retained()


def test_deploy_predict_deliver_ride_out_a_broker_outage_and_restart(
    tmp_path: Path,
    agent_dir: Path,
    device: str,
    mosquitto: Mosquitto,
    signing_key: Any,
    cleanup: list[AgentProcess],
) -> None:
    bundle = build_bundle(tmp_path / "build", signing_key, version="1.0.0", weights_version=1)
    with (
        serve_artifacts(ArtifactServer(token=TOKEN, mqtt_url=mosquitto.url)) as server,
        FleetSide(mosquitto.url, device) as fleet,
    ):
        server.add(1, bundle)
        # No --mqtt: the agent asks the server's /api/v1/info for the broker.
        agent = make_agent(tmp_path, agent_dir, device, server.url)
        cleanup.append(agent)
        agent.start()
        assert agent.request("GET", "/v1/health")[0] == 503

        fleet.publish_desired(desired_for(bundle, 1, "dep-1"))
        wait_for(
            lambda: any(r.phase is DeploymentPhase.COMMITTED for r in fleet.of("report")),
            timeout=20,
            what="deployment committed",
        )
        phases = [r.phase.value for r in fleet.of("report")]
        assert phases == [
            "downloading",
            "verifying",
            "staging",
            "activating",
            "active",
            "validating",
            "committed",
        ]
        assert fleet.of("report")[-1].active_version == "1.0.0"
        assert fleet.of("report")[0].active_version is None
        wait_for(lambda: fleet.of("status")[-1].active_version == "1.0.0", what="status v1")

        for n in range(30):
            status, body = agent.request("POST", "/v1/predict", {"input": [n, 1.0, 2.0, 3.0]})
            assert status == 200, body
        status, body = agent.request("POST", "/v1/predict", {"inputs": [[1, 2, 3, 4]] * 10})
        assert status == 200 and len(body["record_ids"]) == 10
        wait_for(lambda: set(fleet.seqs()) == set(range(1, 41)), what="seqs 1..40 delivered")
        wait_for(
            lambda: (
                sum(t.requests for t in fleet.of("telemetry")) == 40
                and fleet.of("telemetry")[-1].outbox_depth == 0
            ),
            what="telemetry counts 40 requests and shows the outbox drained",
        )
        before = len(fleet.of("telemetry"))
        telemetry = fleet.of("telemetry")[-1]
        assert (telemetry.active_model, telemetry.active_version) == ("tiny", "1.0.0")
        assert telemetry.memory_rss_bytes and telemetry.disk_free_bytes
        # Installed, served, delivered and reported without pydantic (its compiled core would
        # be mapped): messages and files go through edgefleet.codec, options through argparse.
        assert agent.process is not None
        assert "pydantic" not in Path(f"/proc/{agent.process.pid}/maps").read_text()

        # Broker outage: the agent keeps serving and logging; nothing is lost.
        mosquitto.stop()
        try:
            wait_for(lambda: "disconnected from MQTT broker" in agent.log(), what="disconnect seen")
            for n in range(20):
                status, _ = agent.request("POST", "/v1/predict", {"input": [0.0, n, 0.0, 1.0]})
                assert status == 200
        finally:
            mosquitto.start()
        wait_for(lambda: "reconnected to MQTT broker" in agent.log(), timeout=20, what="reconnect")
        wait_for(lambda: set(fleet.seqs()) == set(range(1, 61)), timeout=20, what="seqs 1..60")
        wait_for(
            lambda: (
                len(fleet.of("telemetry")) > before and fleet.of("telemetry")[-1].outbox_depth == 0
            ),
            timeout=15,
            what="telemetry after the outage",
        )
        # (How many of the 20 offline requests the test client sees depends on whether it
        # resubscribed before the agent's first telemetry; test_telemetry covers the window.)
        assert sum(t.requests for t in fleet.of("telemetry")) <= 60
        assert fleet.of("status")[-1].state is DeviceState.ONLINE

        # Graceful stop: exit 0 and an explicit offline status.
        assert agent.stop(signal.SIGTERM) == 0
        wait_for(lambda: fleet.of("status")[-1].state is DeviceState.OFFLINE, what="offline")

        # Restart without a reachable broker: the last active model serves at once.
        offline_agent = make_agent(
            tmp_path, agent_dir, device, server.url, "--mqtt", "mqtt://127.0.0.1:9"
        )
        cleanup.append(offline_agent)
        offline_agent.start()
        assert offline_agent.request("GET", "/v1/health") == (
            200,
            {
                "status": "ok",
                "model": "tiny",
                "version": "1.0.0",
                "mqtt": {"connected": False, "protocol": "5"},
            },
        )
        status, body = offline_agent.request("POST", "/v1/predict", {"input": [1, 2, 3, 4]})
        assert status == 200 and body["version"] == "1.0.0"
        assert offline_agent.stop() == 0
        fleet.clear_retained()
    assert "serving tiny 1.0.0 (restored" in agent.log()


def test_refuses_to_start_without_a_trusted_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefleet",
            "agent",
            "run",
            "--server",
            "http://127.0.0.1:9",
            "--device-id",
            "dev-nokeys",
            "--token",
            TOKEN,
            "--profile",
            PROFILE,
            "--data-dir",
            str(tmp_path / "agent"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no trusted public key" in result.stderr
    assert "trusted_keys" in result.stderr
