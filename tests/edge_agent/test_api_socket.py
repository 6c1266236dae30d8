"""The local API on a Unix domain socket: the same endpoints, real HTTP over a real socket."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.api import LocalApi, PredictionService
from edge_agent.errors import AgentError
from edge_agent.outbox import Outbox
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ModelSlot
from edge_agent.telemetry import Metrics
from edge_agent.unix_socket import UnixHTTPConnection
from tests.edge_agent.helpers import expected
from tests.edge_agent.test_api import served
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration


def request(
    path: Path, method: str, url: str, body: Any = None
) -> tuple[int, str, dict[str, Any] | str]:
    conn = UnixHTTPConnection(path, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, url, body=data)
        response = conn.getresponse()
        text = response.read().decode()
        kind = response.getheader("Content-Type", "")
        return response.status, kind, json.loads(text) if "json" in kind else text
    finally:
        conn.close()


@pytest.fixture
def service(tmp_path: Path, backend: OnnxRuntimeBackend) -> Iterator[PredictionService]:
    slot = ModelSlot()
    slot.swap(served(tmp_path, backend, 1))
    service = PredictionService(slot=slot, outbox=Outbox(tmp_path / "o.sqlite"), metrics=Metrics())
    yield service
    service.outbox.close()


def test_the_api_answers_on_a_unix_socket_with_owner_and_group_access_only(
    tmp_path: Path, service: PredictionService
) -> None:
    path = tmp_path / "agent.sock"
    api = LocalApi(service, socket_path=path)
    api.start()
    try:
        assert api.endpoint == f"unix:{path}"
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o660
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".edgefleet")] == []

        x = [0.1, 0.2, 0.3, 0.4]
        status, _, body = request(path, "POST", "/v1/predict", {"input": x})
        assert status == 200 and isinstance(body, dict)
        np.testing.assert_allclose(body["output"], expected(np.array([x]), 1)[0], rtol=1e-5)
        status, _, body = request(path, "POST", "/v1/predict", {"inputs": [x, x]})
        assert status == 200 and isinstance(body, dict) and len(body["outputs"]) == 2
        status, _, body = request(path, "POST", "/v1/predict", {"input": [1, 2]})
        assert status == 400 and isinstance(body, dict) and "shape" in body["error"]
        status, _, body = request(path, "GET", "/v1/health")
        assert status == 200 and isinstance(body, dict) and body["version"] == "1.0.0"
        assert request(path, "GET", "/v1/model")[0] == 200
        status, kind, text = request(path, "GET", "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        assert "\nedgefleet_agent_requests_total 2\n" in str(text)
        with pytest.raises(AgentError, match="Unix socket"):
            _ = api.address
    finally:
        api.stop()
    assert not path.exists()  # the agent removes its socket on a clean stop


def test_a_stale_socket_is_replaced(tmp_path: Path, service: PredictionService) -> None:
    path = tmp_path / "agent.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # what a killed agent leaves: the file, nobody accepting
    dead.close()
    assert path.exists()
    api = LocalApi(service, socket_path=path)
    api.start()
    try:
        assert request(path, "GET", "/v1/health")[0] == 200
    finally:
        api.stop()


def test_a_socket_in_use_or_a_file_that_is_not_a_socket_is_refused(
    tmp_path: Path, service: PredictionService
) -> None:
    path = tmp_path / "agent.sock"
    first = LocalApi(service, socket_path=path)
    first.start()
    try:
        with pytest.raises(AgentError, match="in use by a running server"):
            LocalApi(service, socket_path=path)
        assert request(path, "GET", "/v1/health")[0] == 200  # the first one is untouched
    finally:
        first.stop()

    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(AgentError, match="exists and is not a socket"):
        LocalApi(service, socket_path=regular)
    assert regular.read_text() == "keep me"
    with pytest.raises(AgentError, match="does not exist"):
        LocalApi(service, socket_path=tmp_path / "missing" / "agent.sock")


def test_the_agent_process_serves_on_a_socket_and_batch_predict_finds_it(
    tmp_path: Path, key_dir: Path
) -> None:
    """A real agent process with ``--socket``, a real ``edgefleet agent predict`` client, a
    second agent refused on the same socket, and a restart after SIGKILL reusing it."""
    data_dir = tmp_path / "agent"
    (data_dir / "trusted_keys").mkdir(parents=True)
    (data_dir / "trusted_keys" / "k.pub").write_bytes((key_dir / "trusted.pub").read_bytes())
    path = tmp_path / "agent.sock"
    args = [
        sys.executable, "-m", "edgefleet", "agent", "run", "--server", "http://127.0.0.1:9",
        "--device-id", "dev-sock", "--token", "t", "--profile", "x86-64/avx512-vnni",
        "--data-dir", str(data_dir), "--mqtt", "mqtt://127.0.0.1:9", "--socket", str(path),
    ]  # fmt: skip
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(args, stdout=log, stderr=log, cwd=ROOT)
    try:
        from tests.edge_agent.helpers import wait_for

        wait_for(lambda: (data_dir / "agent.addr").exists(), timeout=60, what="agent.addr")
        assert (data_dir / "agent.addr").read_text().strip() == f"unix:{path}"
        status, _, body = request(path, "GET", "/v1/health")
        assert status == 503 and isinstance(body, dict) and body["status"] == "no model"

        second = subprocess.run(
            [*args[:-1], str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert second.returncode == 1
        assert "in use by a running server" in second.stderr
        assert "Traceback" not in second.stderr

        np.save(tmp_path / "in.npy", np.zeros((3, 4), np.float32))
        batch = subprocess.run(
            [sys.executable, "-m", "edgefleet", "agent", "predict", "--input",
             str(tmp_path / "in.npy"), "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert batch.returncode == 1  # it reached the agent over the socket: no model yet
        assert "no model is active" in batch.stderr, batch.stderr

        agent.kill()
        agent.wait(timeout=10)
        assert path.exists()  # SIGKILL leaves a stale socket behind
        (data_dir / "agent.addr").unlink()
        agent = subprocess.Popen(args, stdout=log, stderr=log, cwd=ROOT)
        wait_for(lambda: (data_dir / "agent.addr").exists(), timeout=60, what="restart")
        assert request(path, "GET", "/v1/health")[0] == 503
        agent.terminate()
        assert agent.wait(timeout=30) == 0
        assert not path.exists()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
        log.close()
