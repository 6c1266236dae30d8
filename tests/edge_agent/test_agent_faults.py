"""Outbox faults: SIGKILL of a real agent process during durable writes, and a full disk."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.api import LocalApi, PredictionService
from edge_agent.outbox import Outbox, OutboxConfig, OverflowPolicy
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ModelSlot
from edge_agent.telemetry import Metrics
from edge_agent.update import StateStore, Updater, UpdaterConfig
from edgefleet.bundle import SigningKey, VerifyKey
from edgefleet.protocol.messages import DeploymentPhase
from hardware_profiles import HardwareProfile
from tests.edge_agent.helpers import ArtifactServer, build_bundle, desired_for, serve_artifacts
from tests.edge_agent.test_agent_process import TOKEN, AgentProcess, make_agent

pytestmark = pytest.mark.e2e


def install(
    data_dir: Path,
    workdir: Path,
    profile: HardwareProfile,
    key: SigningKey,
    verify_key: VerifyKey,
) -> ModelSlot:
    """Install tiny 1.0.0 into ``data_dir`` the way the agent does (state.json + models/)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(workdir, key, version="1.0.0")
    slot = ModelSlot()
    with serve_artifacts(ArtifactServer(token=TOKEN)) as server:
        server.add(1, bundle)
        updater = Updater(
            config=UpdaterConfig(
                server_url=server.url,
                token=TOKEN,
                profile=profile,
                data_dir=data_dir,
                trusted_keys=(verify_key,),
            ),
            backend=OnnxRuntimeBackend(profile),
            slot=slot,
            store=StateStore(data_dir),
            report=lambda report: None,
        )
        assert updater.apply(desired_for(bundle, 1, "dep-1")) is DeploymentPhase.COMMITTED
    return slot


@pytest.fixture
def data_dir(tmp_path: Path, key_dir: Path) -> Path:
    directory = tmp_path / "agent"
    (directory / "trusted_keys").mkdir(parents=True)
    (directory / "trusted_keys" / "fleet.pub").write_bytes((key_dir / "trusted.pub").read_bytes())
    return directory


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.process is not None:
            agent.process.kill()
            agent.process.wait(timeout=10)


def test_sigkill_during_durable_writes_loses_no_answered_prediction(
    tmp_path: Path,
    data_dir: Path,
    profile: HardwareProfile,
    signing_key: SigningKey,
    verify_key: VerifyKey,
    agents: list[AgentProcess],
) -> None:
    install(data_dir, tmp_path / "build", profile, signing_key, verify_key)
    device = f"dev-{uuid.uuid4().hex[:8]}"
    # No broker: nothing is acknowledged, so every record stays in the outbox.
    agent = make_agent(
        tmp_path, data_dir, device, "http://127.0.0.1:9", "--mqtt", "mqtt://127.0.0.1:9"
    )
    agents.append(agent)
    agent.start()
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(*agent.addr, timeout=10)
        body = json.dumps({"input": [n, 1.0, 2.0, 3.0]})
        while not stop.is_set():
            try:
                conn.request("POST", "/v1/predict", body=body)
                response = conn.getresponse()
                payload = json.loads(response.read())
            except (OSError, http.client.HTTPException, json.JSONDecodeError):
                return  # the kill landed mid-request: that one was never answered
            if response.status == 200 and payload["logged"]:
                with lock:
                    answered.append(payload["record_id"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    outbox = Outbox(data_dir / "outbox.sqlite")
    try:
        stored = {record.record_id for record in outbox.pending(1_000_000)}
    finally:
        outbox.close()
    assert len(answered) > 100
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} answered predictions lost"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip()}); "
                    "test_outbox covers SQLITE_FULL through max_page_count")  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("policy", list(OverflowPolicy))
def test_a_full_disk_keeps_inference_serving_while_the_outbox_drops_and_counts(
    tmp_path: Path,
    tmpfs: Path,
    policy: OverflowPolicy,
    profile: HardwareProfile,
    signing_key: SigningKey,
    verify_key: VerifyKey,
) -> None:
    slot = install(tmp_path / "agent", tmp_path / "build", profile, signing_key, verify_key)
    # The policy's byte bound is far above the disk: the disk fills first.
    outbox = Outbox(tmpfs / "outbox.sqlite", OutboxConfig(max_bytes=1 << 30, policy=policy))
    service = PredictionService(slot=slot, outbox=outbox, metrics=Metrics(), input_sample_rate=1.0)
    api = LocalApi(service, "127.0.0.1", 0)
    api.start()
    statuses: list[int] = []
    logged: list[bool] = []
    try:
        conn = http.client.HTTPConnection(*api.address, timeout=10)
        body = json.dumps({"inputs": [[0.25, 1.5, -2.0, 3.0]] * 200})
        for _ in range(60):  # ~12,000 records with their inputs: several MB
            conn.request("POST", "/v1/predict", body=body)
            response = conn.getresponse()
            payload = json.loads(response.read())
            statuses.append(response.status)
            logged.append(bool(payload.get("logged")))
        conn.close()
        stats = outbox.stats()
    finally:
        api.stop()
        service.close()
        outbox.close()
    assert statuses == [200] * 60
    assert stats.disk_full > 0
    assert stats.dropped > 0
    assert any(logged)
    if policy is OverflowPolicy.REJECT_NEW:
        assert not logged[-1] and stats.rejected_new > 0
    else:
        assert stats.dropped_oldest > 0
