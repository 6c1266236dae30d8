"""What the rollout scenarios share: one fleet server process, agents in a device-like
interpreter (no torch, FastAPI, SQLAlchemy), the real Mosquitto, and signed test bundles.

Bundles are small signed ONNX models built here (no compiler), all with the interface
float32 x [batch, 4] -> y [batch, 3]:

- ``tiny`` 1.0.0 and 2.0.0 are healthy, with different weights; 2.2.0 has 1.0.0's weights
  (it agrees everywhere); 2.3.0 picks another top class than 1.0.0 for about 90% of the
  :func:`examples` with ``mixed`` signs;
- ``tiny`` 2.1.0 returns NaN for any example with a negative feature, while its golden samples
  (features in [0, 1)) still pass, so it installs and activates and fails only in the agent's
  validation window;
- ``heavy`` 1.0.0 and 1.1.0 answer like ``tiny`` 1.0.0 but burn real compute first: a chain of
  256x256 matrix products whose result is multiplied by zero and added to the answer.
  1.1.0 has three times the chain of 1.0.0, so it is about three times slower on the device.

Every assertion is on what the devices *report* (the server's device view, fed by the agents'
reports) and on the agents' own local APIs.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.bundle import (
    SigningKey,
    generate_key_pair,
    load_signing_key,
    pack_bundle,
    seal_bundle,
)
from tests.edge_agent.helpers import (
    IN_FEATURES,
    PROFILE,
    build_bundle,
    expected,
    manifest_for,
    save_x_to_y,
    weights,
)
from tests.support.processes import Process, http_json, run_cli, try_json, wait_until
from tests.support.services import Mosquitto, free_port

MODEL = "tiny"
OLD, NEW, BAD, AGREEING, DISAGREEING = "1.0.0", "2.0.0", "2.1.0", "2.2.0", "2.3.0"
HEAVY = "heavy"
HEAVY_OLD, HEAVY_SLOW = "1.0.0", "1.1.0"
HEAVY_LAYERS = {HEAVY_OLD: 8, HEAVY_SLOW: 24}
AGENTS = 4
# The device judges a new model over a short window with traffic; no latency bound (a loaded
# CI machine makes p95 ratios noisy; the latency gate has its own scenario).
HEALTH = {"window_s": 1.0, "min_requests": 5, "max_error_rate": 0.05, "max_latency_ratio": None}
GATES: dict[str, Any] = {
    "success": [
        {"kind": "installed", "min_fraction": 1.0},
        {"kind": "error_rate", "max": 0.05},
    ],
    "abort": [{"kind": "failed_fraction", "min": 0.5}],
}


@dataclass
class Agent:
    device_id: str
    url: str
    process: Process

    def serving(self) -> str | None:
        version = (try_json(f"{self.url}/v1/health") or {}).get("version")
        return None if version is None else str(version)


@dataclass
class Server:
    url: str
    token: str
    process: Process
    work: Path
    public_key: Path


@dataclass
class Fleet:
    """The server and this test's own agents, labelled ``cohort=<name>``, in one cohort."""

    url: str
    token: str
    server: Process
    cohort: str
    agents: list[Agent] = field(default_factory=list)

    @property
    def processes(self) -> tuple[Process, ...]:
        return (self.server, *(agent.process for agent in self.agents if agent.process.alive()))

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, reply = http_json(method, f"{self.url}/api/v1{path}", token=self.token, body=body)
        assert 200 <= status < 300, f"{method} {path}: {status} {reply}"
        return reply

    def device(self, device_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/devices/{device_id}"))

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return dict(self.api("GET", f"/rollouts/{rollout_id}?devices=true"))

    def start_rollout(
        self, version: str, strategy: dict[str, Any], health: Any, model: str = MODEL
    ) -> int:
        body = {
            "cohort": self.cohort,
            "model": model,
            "version": version,
            "strategy": strategy,
            "health": health,
        }
        return int(self.api("POST", "/rollouts", body)["id"])

    def wait_rollout(self, rollout_id: int, status: str, timeout: float) -> dict[str, Any]:
        def reached() -> bool:
            return bool(self.rollout(rollout_id)["status"] == status)

        try:
            wait_until(reached, timeout, f"rollout {rollout_id} to be {status}", self.processes)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast view: {self.rollout(rollout_id)}") from None
        return self.rollout(rollout_id)

    def reported(self) -> dict[str, str | None]:
        return {a.device_id: self.device(a.device_id)["reported_version"] for a in self.agents}

    def converge(self, version: str, model: str = MODEL) -> None:
        """Bring every agent to ``version`` with an all-at-once rollout (no window)."""
        strategy = {"kind": "all_at_once", "bake_s": 0, "timeout_s": 30, "gates": GATES}
        rollout_id = self.start_rollout(version, strategy, {"window_s": 0}, model)
        self.wait_rollout(rollout_id, "succeeded", 45)
        wait_until(
            lambda: all(a.serving() == version for a in self.agents),
            20,
            f"every agent to serve {version}",
            self.processes,
        )


class Traffic:
    """Posts predictions to every agent's local API in a background thread."""

    def __init__(self, agents: list[Agent], examples: np.ndarray) -> None:
        self.agents = agents
        self.examples = examples
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            for agent in self.agents:
                example = self.examples[index % len(self.examples)]
                try:
                    http_json("POST", f"{agent.url}/v1/predict", body={"input": example.tolist()})
                    self.sent += 1
                except OSError:  # the agent is swapping models, briefly busy or stopped
                    pass
                index += 1
            self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


# -- models ----------------------------------------------------------------------------------

HEAVY_SIDE = 256


def write_heavy_onnx(path: Path, layers: int) -> Path:
    """``tiny`` 1.0.0's y = x @ W + b, plus ``layers`` real 256x256 matrix products (with
    tanh) on a square lifted from x, whose sum is multiplied by zero and added to y: the
    answer is unchanged, the work grows linearly with ``layers``. It depends on x, so
    onnxruntime cannot fold it away at load time."""
    from onnx import helper, numpy_helper

    w, b = weights(1)
    rng = np.random.default_rng(100)
    side = HEAVY_SIDE
    lift = (rng.normal(size=(IN_FEATURES, side * side)) / 2).astype(np.float32)
    mix = (rng.normal(size=(side, side)) / np.sqrt(side)).astype(np.float32)
    init = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "B"),
        numpy_helper.from_array(lift, "lift"),
        numpy_helper.from_array(mix, "mix"),
        numpy_helper.from_array(np.array([-1, side], np.int64), "square"),
        numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["clean"]),
        helper.make_node("MatMul", ["x", "lift"], ["lifted"]),
        helper.make_node("Reshape", ["lifted", "square"], ["h0"]),
    ]
    for i in range(layers):  # tanh keeps every value bounded: 0 * sum is exactly 0
        nodes.append(helper.make_node("MatMul", [f"h{i}", "mix"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"h{layers}"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["clean", "nothing"], ["y"]),
    ]
    return save_x_to_y(path, "heavy", nodes, init)


def heavy_bundle(work: Path, key: SigningKey, version: str) -> Path:
    directory = work / f"{HEAVY}-{version}"
    directory.mkdir(parents=True)
    write_heavy_onnx(directory / "model.onnx", HEAVY_LAYERS[version])
    inputs = np.random.default_rng(7).uniform(0, 1, size=(4, IN_FEATURES)).astype(np.float32)
    np.savez(directory / "golden.npz", inputs=inputs, outputs=expected(inputs, 1))
    seal_bundle(directory, manifest_for(HEAVY, version, PROFILE), key)
    return pack_bundle(directory, work / f"{directory.name}.tar")


# -- processes -------------------------------------------------------------------------------


def server_process(
    work: Path, mosquitto: Mosquitto, public: Path, port: int, token: str
) -> Process:
    """A ``fleet serve`` process on SQLite in ``work/server`` (restartable on the same data)."""
    return Process(
        "server",
        [
            "fleet", "serve", "--port", str(port), "--data-dir", str(work / "server"),
            "--mqtt", mosquitto.url, "--admin-token", token,
            "--trusted-key", str(public), "--executor-interval", "0.2",
        ],
        work / "server.log",
    )  # fmt: skip


def wait_serving(url: str, process: Process) -> None:
    wait_until(lambda: try_json(f"{url}/api/v1/info") is not None, 60, "server", (process,))


def start_agent(fleet: Fleet, server: Server, device_id: str) -> Agent:
    registered = fleet.api(
        "POST",
        "/devices",
        {"device_id": device_id, "profile": PROFILE, "labels": {"cohort": fleet.cohort}},
    )
    work, public = server.work, server.public_key
    for attempt in range(3):  # another process may take the free port before the agent does
        listen = f"127.0.0.1:{free_port()}"
        log = work / f"{device_id}.log"
        process = Process(
            f"agent-{device_id}",
            [
                "agent", "run", "--server", fleet.url, "--device-id", device_id,
                "--token", registered["token"], "--profile", PROFILE,
                "--data-dir", str(work / device_id), "--listen", listen,
                "--trusted-key", str(public), "--telemetry-interval", "0.3",
            ],
            log,
            device_like=True,
        ).start()  # fmt: skip
        wait_until(
            lambda: listening(listen) or not process.alive(),  # noqa: B023
            60,
            f"agent {device_id} to listen",
        )
        if process.alive() or "Address already in use" not in process.output():
            return Agent(device_id, f"http://{listen}", process)
        process.stop()
        log.rename(log.with_suffix(f".{attempt}.log"))
    raise AssertionError(f"agent {device_id}: no free port to listen on")


def listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


# -- fixtures (import them into a test module to use them) -----------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, str], Path]]:
    work = tmp_path_factory.mktemp("rollout-bundles")
    private, public = generate_key_pair(work, "rollouts")
    key = load_signing_key(private)

    def tiny(version: str, weights_version: int, trap: str | None = None) -> Path:
        built = build_bundle(
            work, key, name=MODEL, version=version, weights_version=weights_version, trap=trap
        )
        return built.tar

    tars = {
        (MODEL, OLD): tiny(OLD, 1),
        (MODEL, NEW): tiny(NEW, 2),
        (MODEL, BAD): tiny(BAD, 2, trap="nan"),
        (MODEL, AGREEING): tiny(AGREEING, 1),
        (MODEL, DISAGREEING): tiny(DISAGREEING, 4),
        (HEAVY, HEAVY_OLD): heavy_bundle(work, key, HEAVY_OLD),
        (HEAVY, HEAVY_SLOW): heavy_bundle(work, key, HEAVY_SLOW),
    }
    return public, tars


def upload(url: str, token: str, tars: dict[tuple[str, str], Path]) -> None:
    for tar in tars.values():
        status, reply = http_json("POST", f"{url}/api/v1/models", token=token, raw=tar.read_bytes())
        assert status == 201, reply


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: Mosquitto,
    bundles: tuple[Path, dict[tuple[str, str], Path]],
) -> Iterator[Server]:
    public, tars = bundles
    work = tmp_path_factory.mktemp("rollout-fleet")
    port, token = free_port(), secrets.token_urlsafe(16)
    process = server_process(work, mosquitto, public, port, token).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process)
        upload(url, token, tars)
        yield Server(url, token, process, work, public)
    finally:
        process.stop()


def new_fleet(server: Server, *, model: str = MODEL, version: str = OLD) -> Fleet:
    """Fresh agents (a device never downgrades without an explicit rollback), all serving
    ``model version``, in a cohort of their own. Stop them with :func:`stop_fleet`."""
    cohort = f"c{secrets.token_hex(4)}"
    fleet = Fleet(server.url, server.token, server.process, cohort)
    try:
        for n in range(AGENTS):
            fleet.agents.append(start_agent(fleet, server, f"{cohort}-{n}"))
        client = ("--server", fleet.url, "--token", fleet.token)
        created = run_cli(
            "cohort", "create", cohort, "--select", f"cohort={cohort}", "--json", *client
        )
        assert len(json.loads(created.stdout)["devices"]) == AGENTS
        wait_until(
            lambda: all(fleet.device(a.device_id)["online"] for a in fleet.agents),
            60,
            "every agent online",
            fleet.processes,
        )
        fleet.converge(version, model)
    except BaseException:
        stop_fleet(fleet)
        raise
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    for agent in fleet.agents:
        agent.process.stop()


@pytest.fixture
def fleet(server: Server) -> Iterator[Fleet]:
    """Four fresh agents serving tiny 1.0.0 in a cohort of their own."""
    fleet = new_fleet(server)
    try:
        yield fleet
    finally:
        stop_fleet(fleet)


# -- strategies and views --------------------------------------------------------------------


def canary(*waves: dict[str, Any], gates: dict[str, Any] | None = None) -> dict[str, Any]:
    steps = [{"size": size, "bake_s": 1.0, "timeout_s": 30.0} for size in waves]
    return {"kind": "canary", "waves": steps, "gates": gates or GATES}


def wave_devices(view: dict[str, Any], index: int) -> set[str]:
    return {d["device_id"] for d in view["devices"] if d["wave"] == index}


def examples(*, negative: bool = False, mixed: bool = False) -> np.ndarray:
    """32 examples with features in [0, 1), in [-1, 0) (``negative``) or in [-1, 1)."""
    rng = np.random.default_rng(11)
    low, high = (-1.0, 1.0) if mixed else (-1.0, 0.0) if negative else (0.0, 1.0)
    return rng.uniform(low, high, size=(32, 4)).astype(np.float32)
