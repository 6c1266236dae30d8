"""Rollout scenarios with real agent processes: one fleet server process, four agents in a
device-like interpreter (no torch, FastAPI, SQLAlchemy), the real Mosquitto.

Bundles are tiny signed ONNX models (no compiler): 1.0.0 and 2.0.0 are healthy; 2.1.0 returns
NaN for any example with a negative feature, while its golden samples (features in [0, 1))
still pass, so it installs and activates and fails only in the agent's validation window.
Every assertion is on what the devices *report* (the server's device view, fed by the agents'
reports) and on the agents' own local APIs.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.bundle import generate_key_pair, load_signing_key
from tests.edge_agent.helpers import PROFILE, FleetSide, build_bundle
from tests.support.processes import Process, http_json, run_cli, try_json, wait_until
from tests.support.services import Mosquitto, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

MODEL = "tiny"
OLD, NEW, BAD = "1.0.0", "2.0.0", "2.1.0"
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
        return (self.server, *(agent.process for agent in self.agents))

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, reply = http_json(method, f"{self.url}/api/v1{path}", token=self.token, body=body)
        assert 200 <= status < 300, f"{method} {path}: {status} {reply}"
        return reply

    def device(self, device_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/devices/{device_id}"))

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return dict(self.api("GET", f"/rollouts/{rollout_id}?devices=true"))

    def start_rollout(self, version: str, strategy: dict[str, Any], health: Any) -> int:
        body = {
            "cohort": self.cohort,
            "model": MODEL,
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

    def converge(self, version: str) -> None:
        """Bring every agent to ``version`` with an all-at-once rollout (no window)."""
        strategy = {"kind": "all_at_once", "bake_s": 0, "timeout_s": 30, "gates": GATES}
        rollout_id = self.start_rollout(version, strategy, {"window_s": 0})
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
                except OSError:  # the agent is swapping models or briefly busy
                    pass
                index += 1
            self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    work = tmp_path_factory.mktemp("rollout-bundles")
    private, public = generate_key_pair(work, "rollouts")
    key = load_signing_key(private)
    tars = {
        OLD: build_bundle(work, key, name=MODEL, version=OLD, weights_version=1).tar,
        NEW: build_bundle(work, key, name=MODEL, version=NEW, weights_version=2).tar,
        BAD: build_bundle(work, key, name=MODEL, version=BAD, weights_version=2, trap="nan").tar,
    }
    return public, tars


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: Mosquitto,
    bundles: tuple[Path, dict[str, Path]],
) -> Iterator[Server]:
    public, tars = bundles
    work = tmp_path_factory.mktemp("rollout-fleet")
    port, token = free_port(), secrets.token_urlsafe(16)
    process = Process(
        "server",
        [
            "fleet", "serve", "--port", str(port), "--data-dir", str(work / "server"),
            "--mqtt", mosquitto.url, "--admin-token", token,
            "--trusted-key", str(public), "--executor-interval", "0.2",
        ],
        work / "server.log",
    ).start()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: try_json(f"{url}/api/v1/info") is not None, 60, "server", (process,))
        for tar in tars.values():
            status, reply = http_json(
                "POST", f"{url}/api/v1/models", token=token, raw=tar.read_bytes()
            )
            assert status == 201, reply
        yield Server(url, token, process, work, public)
    finally:
        process.stop()


@pytest.fixture
def fleet(server: Server) -> Iterator[Fleet]:
    """Fresh agents per test (a device never downgrades without an explicit rollback), all
    serving 1.0.0, in a cohort of their own."""
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
        fleet.converge(OLD)
        yield fleet
    finally:
        for agent in fleet.agents:
            agent.process.stop()


def start_agent(fleet: Fleet, server: Server, device_id: str) -> Agent:
    registered = fleet.api(
        "POST",
        "/devices",
        {"device_id": device_id, "profile": PROFILE, "labels": {"cohort": fleet.cohort}},
    )
    work, public = server.work, server.public_key
    listen = f"127.0.0.1:{free_port()}"
    process = Process(
        f"agent-{device_id}",
        [
            "agent", "run", "--server", fleet.url, "--device-id", device_id,
            "--token", registered["token"], "--profile", PROFILE,
            "--data-dir", str(work / device_id), "--listen", listen,
            "--trusted-key", str(public), "--telemetry-interval", "0.3",
        ],
        work / f"{device_id}.log",
        device_like=True,
    ).start()  # fmt: skip
    return Agent(device_id, f"http://{listen}", process)


def canary(*waves: dict[str, Any]) -> dict[str, Any]:
    steps = [{"size": size, "bake_s": 1.0, "timeout_s": 30.0} for size in waves]
    return {"kind": "canary", "waves": steps, "gates": GATES}


def wave_devices(view: dict[str, Any], index: int) -> set[str]:
    return {d["device_id"] for d in view["devices"] if d["wave"] == index}


def examples(*, negative: bool) -> np.ndarray:
    rng = np.random.default_rng(11)
    low, high = (-1.0, 0.0) if negative else (0.0, 1.0)
    return rng.uniform(low, high, size=(32, 4)).astype(np.float32)


def test_healthy_canary_waves_promote_by_themselves(fleet: Fleet) -> None:
    with Traffic(fleet.agents, examples(negative=True)) as traffic:
        rollout_id = fleet.start_rollout(
            NEW, canary({"kind": "count", "value": 1}, {"kind": "percent", "value": 100}), HEALTH
        )
        view = fleet.wait_rollout(rollout_id, "succeeded", 60)
    assert traffic.sent > 0
    assert [w["status"] for w in view["waves"]] == ["succeeded", "succeeded"]
    assert [w["target_devices"] for w in view["waves"]] == [1, AGENTS - 1]  # per wave
    assert len(wave_devices(view, 0)) == 1 and len(wave_devices(view, 1)) == AGENTS - 1
    assert view["previous_version"] == OLD
    assert view["counts"] == {"succeeded": AGENTS}
    first_gates = {g["gate"]: g for g in view["waves"][0]["gates"]}
    assert first_gates["error_rate"]["ok"] and first_gates["error_rate"]["value"] == 0

    for agent in fleet.agents:
        reported = fleet.device(agent.device_id)
        assert (reported["reported_model"], reported["reported_version"]) == (MODEL, NEW)
        assert reported["deployment_phase"] == "committed"
        assert agent.serving() == NEW
        assert f"(tiny {NEW}): validating" in agent.process.output()
        assert f"validated tiny {NEW}" in agent.process.output()


def test_a_nan_model_aborts_at_the_first_wave_and_later_waves_never_get_it(
    fleet: Fleet, mosquitto: Mosquitto
) -> None:
    with ExitStack() as stack:
        listeners = {
            a.device_id: stack.enter_context(FleetSide(mosquitto.url, a.device_id, auto_ack=False))
            for a in fleet.agents
        }
        # Negative features: 1.0.0 answers normally, 2.1.0 answers NaN.
        with Traffic(fleet.agents, examples(negative=True)):
            rollout_id = fleet.start_rollout(
                BAD,
                canary(
                    {"kind": "count", "value": 1},
                    {"kind": "count", "value": 2},
                    {"kind": "percent", "value": 100},
                ),
                HEALTH,
            )
            view = fleet.wait_rollout(rollout_id, "rolled_back", 60)
        (first,) = wave_devices(view, 0)
        by_id = {agent.device_id: agent for agent in fleet.agents}
        wait_until(lambda: by_id[first].serving() == OLD, 20, "the canary to serve 1.0.0 again")
        wait_until(
            lambda: (
                fleet.device(first)["desired_version"] == OLD
                and fleet.device(first)["deployment_phase"] == "committed"
            ),
            20,
            "the canary to take the server's rollback deployment",
            fleet.processes,
        )
        reports = {device_id: listener.of("report") for device_id, listener in listeners.items()}

    assert [w["status"] for w in view["waves"]] == ["failed", "cancelled", "cancelled"]
    assert wave_devices(view, 1) == wave_devices(view, 2) == set()
    tripped = [g["gate"] for g in view["waves"][0]["gates"] if g["ok"]]
    assert tripped == ["failed_fraction"], view["waves"][0]["gates"]

    # The canary rolled back by itself (its own reports, before the server said anything) ...
    bad = [r for r in reports[first] if r.version == BAD]
    phases = [r.phase.value for r in bad]
    assert phases[-3:] == ["validating", "rolling_back", "rolled_back"], phases
    assert bad[-1].active_version == OLD and "NaN outputs" in bad[-1].detail, bad[-1]
    after = reports[first][reports[first].index(bad[-1]) + 1 :]
    assert after and all(r.version == OLD for r in after), after
    log = by_id[first].process.output()
    self_rollback = log.index(f"(tiny {BAD}): rolled_back: validating:")
    assert log.index("desired state received: tiny 1.0.0", self_rollback) > self_rollback
    # ... and the server shows only what it reported: 1.0.0, committed on the rollback.
    reported = fleet.device(first)
    assert (reported["reported_version"], reported["desired_version"]) == (OLD, OLD), reported

    for agent in fleet.agents:
        if agent.device_id == first:
            continue
        assert reports[agent.device_id] == [], reports[agent.device_id]
        reported = fleet.device(agent.device_id)
        assert (reported["reported_version"], reported["desired_version"]) == (OLD, OLD), reported
        assert BAD not in reported["deployment_detail"]
        assert agent.serving() == OLD
        assert BAD not in agent.process.output()
