"""Resident memory of the real agent process vs a bare script running the same model.

The agent is measured as a device runs it: ``python -m edgefleet agent run`` against a real
Mosquitto, the model installed through its own update path (download, verify, stage,
activate, commit) from a loopback artifact server, its local HTTP API serving ``requests``
predictions in durable mode while a fleet-side client acknowledges the delivered records.
Then it is restarted and measured again: a device that boots restores its model from disk.

The bare script imports onnxruntime, loads the same model with the same session options
(threads, no spinning), and runs the same ``requests`` predictions one by one.

Memory is read from ``/proc/PID/smaps_rollup`` of each process once it is in steady state.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROFILE = "x86-64/avx512-vnni"
TOKEN = "bench-token"


@dataclass(frozen=True)
class Memory:
    rss_mb: float
    anon_mb: float
    pss_mb: float


def read_memory(pid: int) -> Memory:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = float(rest.split()[0]) / 1024
    return Memory(fields["Rss"], fields["Anonymous"], fields["Pss"])


_BARE = """
import sys, time
import numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = {threads}
options.inter_op_num_threads = 1
options.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(sys.argv[1], sess_options=options,
                               providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
for example in x:
    session.run(None, {{"x": example[np.newaxis]}})
print("ready", flush=True)
sys.stdin.readline()
"""


def bare_memory(model: Path, inputs: Path, threads: int) -> Memory:
    process = subprocess.Popen(
        [sys.executable, "-c", _BARE.format(threads=threads), str(model), str(inputs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the bare script failed")
        return read_memory(process.pid)
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def build_bundle(workdir: Path, model: Path, manifest: Any, key: Any) -> Any:
    """A signed bundle tar of ``model`` whose golden samples come from onnxruntime."""
    import shutil

    import onnxruntime as ort

    from edgefleet.bundle import pack_bundle, seal_bundle
    from tests.edge_agent.helpers import BuiltBundle

    directory = workdir / "bundle"
    directory.mkdir()
    shutil.copy(model, directory / "model.onnx")
    inputs = np.random.default_rng(7).normal(size=(4, 512)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": inputs})[0]
    np.savez(directory / "golden.npz", inputs=inputs, outputs=outputs)
    sealed = seal_bundle(directory, manifest, key)
    tar = pack_bundle(directory, workdir / "bundle.tar")
    data = tar.read_bytes()
    return BuiltBundle(tar, hashlib.sha256(data).hexdigest(), len(data), sealed)


class AgentUnderTest:
    """``python -m edgefleet agent run`` as a child process."""

    def __init__(self, args: list[str], data_dir: Path, log: Path) -> None:
        self.args, self.data_dir, self.log = args, data_dir, log
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ("", 0)

    def start(self) -> None:
        from tests.edge_agent.helpers import wait_for

        addr = self.data_dir / "agent.addr"
        addr.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgefleet", "agent", "run", *self.args],
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        process = self.process
        wait_for(lambda: addr.exists() or process.poll() is not None, 60, "agent.addr")
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited: {self.log.read_text()[-2000:]}")
        host, port = addr.read_text().strip().rsplit(":", 1)
        self.address = (host, int(port))

    def healthy(self) -> bool:
        conn = http.client.HTTPConnection(*self.address, timeout=5)
        try:
            conn.request("GET", "/v1/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    def predict_all(self, inputs: np.ndarray) -> None:
        conn = http.client.HTTPConnection(*self.address, timeout=30)
        try:
            for example in inputs:
                conn.request("POST", "/v1/predict", body=json.dumps({"input": example.tolist()}))
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"predict failed: {response.status} {body[:200]!r}")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None


def agent_memory(
    workdir: Path, model: Path, manifest: Any, inputs: np.ndarray, settle: float = 2.0
) -> tuple[Memory, Memory]:
    """(after installing through the update path, after a restart), each in steady state."""
    from edgefleet.bundle import generate_key_pair, load_signing_key
    from tests.edge_agent.helpers import (
        ArtifactServer,
        FleetSide,
        desired_for,
        serve_artifacts,
        wait_for,
    )
    from tests.support.services import start_mosquitto

    keys = workdir / "keys"
    generate_key_pair(keys, "fleet")
    bundle = build_bundle(workdir, model, manifest, load_signing_key(keys / "fleet.key"))
    data_dir = workdir / "agent"
    (data_dir / "trusted_keys").mkdir(parents=True)
    (data_dir / "trusted_keys" / "fleet.pub").write_bytes((keys / "fleet.pub").read_bytes())
    (workdir / "mosquitto").mkdir()
    broker = start_mosquitto(workdir / "mosquitto")
    device = f"bench-{os.getpid()}"
    try:
        with (
            serve_artifacts(ArtifactServer(token=TOKEN, mqtt_url=broker.url)) as server,
            FleetSide(broker.url, device) as fleet,
        ):
            server.add(1, bundle)
            args = [
                "--server", server.url, "--mqtt", broker.url, "--device-id", device,
                "--token", TOKEN, "--profile", PROFILE, "--data-dir", str(data_dir),
                "--listen", "127.0.0.1:0", "--telemetry-interval", "0.5",
            ]  # fmt: skip
            agent = AgentUnderTest(args, data_dir, workdir / "agent.log")
            measured: list[Memory] = []
            try:
                fleet.publish_desired(desired_for(bundle, 1, "bench-1"))
                for _ in range(2):  # installed through the update path, then restored
                    agent.start()
                    wait_for(agent.healthy, 60, "the agent serves the model")
                    agent.predict_all(inputs)
                    time.sleep(settle)  # telemetry and deliveries run; acks come back
                    assert agent.process is not None
                    measured.append(read_memory(agent.process.pid))
                    agent.stop()
                wait_for(lambda: len(set(fleet.seqs())) >= 2 * len(inputs), 30, "delivery")
            finally:
                if agent.process is not None:
                    agent.process.kill()
                fleet.clear_retained()
    finally:
        broker.stop()
    return measured[0], measured[1]
