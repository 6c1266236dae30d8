"""One model from PyTorch to a serving device and back, every part a real process.

The compiler runs as the CLI; the fleet server and the agent run as separate processes
against a real Mosquitto; the agent runs in an interpreter where torch, FastAPI and
SQLAlchemy cannot be imported, as on a device that installed ``edgefleet[agent]`` only.
"""

from __future__ import annotations

import json
import secrets
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.processes import Process, http_json, run_cli, try_json, wait_until
from tests.support.services import Mosquitto, free_port

pytestmark = pytest.mark.e2e

PROFILE = "x86-64/avx512-vnni"


@dataclass(frozen=True)
class Compiled:
    bundle_tar: Path
    public_key: Path
    images: np.ndarray


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    work = tmp_path_factory.mktemp("compiled")
    run_cli("keys", "generate", "--out", str(work / "keys"), "--name", "e2e")
    from compiler.examples.digits import write_datasets

    calibration, eval_data = write_datasets(work / "data")
    run_cli(
        "compile",
        "compiler.examples.digits:trained_cnn",
        "--profile",
        PROFILE,
        "--calibration",
        str(calibration),
        "--eval",
        str(eval_data),
        "--key",
        str(work / "keys" / "e2e.key"),
        "--name",
        "digits",
        "--version",
        "1.0.0",
        "--out",
        str(work / "bundles"),
    )
    (bundle_tar,) = (work / "bundles").glob("*.tar")
    return Compiled(bundle_tar, work / "keys" / "e2e.pub", np.load(eval_data)["x"][:40])


@dataclass
class Fleet:
    url: str
    token: str
    data_dir: Path
    server: Process

    def device(self, device_id: str) -> dict[str, Any]:
        status, body = http_json("GET", f"{self.url}/api/v1/devices/{device_id}", token=self.token)
        assert status == 200, body
        return dict(body)


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: Mosquitto, compiled: Compiled) -> Iterator[Fleet]:
    url, token = f"http://127.0.0.1:{free_port()}", secrets.token_urlsafe(16)
    data_dir = tmp_path / "server"
    server = Process(
        "server",
        [
            "fleet",
            "serve",
            "--port",
            url.rsplit(":", 1)[1],
            "--data-dir",
            str(data_dir),
            "--mqtt",
            mosquitto.url,
            "--admin-token",
            token,
            "--trusted-key",
            str(compiled.public_key),
        ],
        tmp_path / "server.log",
    ).start()
    try:
        wait_until(lambda: try_json(f"{url}/api/v1/info") is not None, 60, "server", (server,))
        yield Fleet(url, token, data_dir, server)
    finally:
        server.stop()


def start_agent(
    fleet: Fleet, tmp_path: Path, compiled: Compiled, device_id: str
) -> tuple[Process, str]:
    registered = run_cli(
        "fleet", "register", device_id, "--profile", PROFILE, "--json",
        "--server", fleet.url, "--token", fleet.token,
    )  # fmt: skip
    device_token = json.loads(registered.stdout)["token"]
    listen = f"127.0.0.1:{free_port()}"
    agent = Process(
        f"agent-{device_id}",
        [
            "agent", "run", "--server", fleet.url, "--device-id", device_id,
            "--token", device_token, "--profile", PROFILE,
            "--data-dir", str(tmp_path / device_id), "--listen", listen,
            "--trusted-key", str(compiled.public_key), "--telemetry-interval", "0.5",
        ],
        tmp_path / f"{device_id}.log",
        device_like=True,
    ).start()  # fmt: skip
    return agent, f"http://{listen}"


def push_and_assign(fleet: Fleet, compiled: Compiled, device_id: str) -> None:
    client = ("--server", fleet.url, "--token", fleet.token)
    run_cli("fleet", "push", str(compiled.bundle_tar), *client)
    run_cli("fleet", "assign", device_id, "--model", "digits", "--version", "1.0.0", *client)


def predict(agent_url: str, image: np.ndarray) -> dict[str, Any]:
    status, body = http_json("POST", f"{agent_url}/v1/predict", body={"input": image.tolist()})
    assert status == 200, body
    return dict(body)


def received(fleet: Fleet, device_id: str) -> int:
    return int(fleet.device(device_id)["predictions_received"])


def test_a_prediction_made_on_the_agent_reaches_the_server(
    fleet: Fleet, compiled: Compiled, tmp_path: Path
) -> None:
    agent, agent_url = start_agent(fleet, tmp_path, compiled, "dev-1")
    try:
        push_and_assign(fleet, compiled, "dev-1")
        serving = lambda: (try_json(f"{agent_url}/v1/health") or {}).get("version") == "1.0.0"  # noqa: E731
        wait_until(serving, 60, "the agent to serve 1.0.0", (agent, fleet.server))
        reply = predict(agent_url, compiled.images[0])
        assert len(reply["output"]) == 10
        wait_until(lambda: received(fleet, "dev-1") == 1, 30, "the record", (agent,))
        (stored,) = http_json(
            "GET", f"{fleet.url}/api/v1/devices/dev-1/predictions", token=fleet.token
        )[1]
        assert stored["record_id"] == reply["record_id"]
        assert stored["output"] == pytest.approx(reply["output"])
        view = fleet.device("dev-1")
        assert (view["reported_model"], view["reported_version"]) == ("digits", "1.0.0")
        assert view["online"] is True
    finally:
        assert agent.stop() is not None
    assert "is not installed on a device" not in agent.output()


def test_broker_outage_loses_no_prediction_and_telemetry_resumes(
    fleet: Fleet, compiled: Compiled, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    agent, agent_url = start_agent(fleet, tmp_path, compiled, "dev-2")
    try:
        push_and_assign(fleet, compiled, "dev-2")
        serving = lambda: (try_json(f"{agent_url}/v1/health") or {}).get("version") == "1.0.0"  # noqa: E731
        wait_until(serving, 60, "the agent to serve 1.0.0", (agent, fleet.server))
        for image in compiled.images[:10]:
            predict(agent_url, image)
        wait_until(lambda: received(fleet, "dev-2") == 10, 30, "first records", (agent,))

        mosquitto.stop()
        for image in compiled.images[10:40]:  # the agent keeps serving while the broker is down
            predict(agent_url, image)
        mosquitto.start()
        restarted = time.time()

        wait_until(lambda: received(fleet, "dev-2") == 40, 60, "all 40 records", (agent,))
        wait_until(
            lambda: (fleet.device("dev-2")["last_telemetry"] or {}).get("ts", 0) > restarted,
            30,
            "telemetry to resume",
            (agent,),
        )
        records = http_json(
            "GET", f"{fleet.url}/api/v1/devices/dev-2/predictions?limit=100", token=fleet.token
        )[1]
        assert sorted(record["seq"] for record in records) == list(range(1, 41))
        assert fleet.device("dev-2")["online"] is True
    finally:
        if mosquitto.process is None:
            mosquitto.start()
        agent.stop()


def test_a_flipped_byte_is_refused_by_server_upload_and_agent_install(
    fleet: Fleet, compiled: Compiled, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(compiled.bundle_tar.read_bytes())
    flip_model_byte(tampered)
    client = ("--server", fleet.url, "--token", fleet.token)
    refused = run_cli("fleet", "push", str(tampered), *client, check=False)
    assert refused.returncode == 1
    assert "model.onnx" in refused.stderr and "Traceback" not in refused.stderr

    agent, _ = start_agent(fleet, tmp_path, compiled, "dev-3")
    try:
        run_cli("fleet", "push", str(compiled.bundle_tar), *client)
        (stored,) = (fleet.data_dir / "artifacts").glob("*.tar")
        flip_model_byte(stored)  # storage corruption after a good upload
        run_cli("fleet", "assign", "dev-3", "--model", "digits", "--version", "1.0.0", *client)
        wait_until(
            lambda: fleet.device("dev-3")["deployment_phase"] == "failed",
            60,
            "the agent to refuse the bundle",
            (agent,),
        )
        view = fleet.device("dev-3")
        assert "model.onnx" in view["deployment_detail"]
        assert view["reported_version"] is None
    finally:
        agent.stop()


def flip_model_byte(tar_path: Path) -> None:
    with tarfile.open(tar_path) as tar:
        offset = next(m for m in tar.getmembers() if m.name.endswith(".onnx")).offset_data
    data = bytearray(tar_path.read_bytes())
    data[offset + 200] ^= 0x01
    tar_path.write_bytes(bytes(data))
