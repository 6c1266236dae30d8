"""Rollouts through faults, with real agent processes and the real Mosquitto: a device that is
offline during its wave, and a fleet server killed (SIGKILL) in the middle of a rollout.

The fixtures and models are those of :mod:`tests.e2e.rollout_fleet`.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgefleet.codec import from_json
from edgefleet.protocol.messages import DesiredState
from edgefleet.protocol.topics import Channel, topic
from tests.e2e.rollout_fleet import (
    AGENTS,
    GATES,
    HEALTH,
    MODEL,
    NEW,
    OLD,
    Fleet,
    Server,
    Traffic,
    examples,
    new_fleet,
    server_process,
    stop_fleet,
    upload,
    wait_serving,
    wave_devices,
)
from tests.edge_agent.helpers import FleetSide
from tests.support.processes import Process, wait_until
from tests.support.services import Mosquitto, free_port, own_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def kill(process: Process) -> None:
    """SIGKILL: no shutdown code runs (the broker publishes the Last Will of an agent)."""
    assert process.popen is not None
    os.kill(process.popen.pid, signal.SIGKILL)
    process.popen.wait(15)
    process.popen = None


def test_an_offline_device_does_not_hold_its_wave_and_converges_when_it_returns(
    fleet: Fleet,
) -> None:
    gone = fleet.agents[-1]
    online = fleet.agents[:-1]
    kill(gone.process)
    wait_until(lambda: not fleet.device(gone.device_id)["online"], 30, "the Last Will")
    timeout_s = 4.0
    gates = {
        "success": [
            {"kind": "installed", "min_fraction": 0.5},
            {"kind": "error_rate", "max": 0.05},
        ],
        "abort": [{"kind": "failed_fraction", "min": 0.5}],
    }
    step = {"bake_s": 0.5, "timeout_s": timeout_s}
    strategy = {
        "kind": "canary",
        "waves": [
            {"size": {"kind": "percent", "value": 50}, **step},
            {"size": {"kind": "percent", "value": 100}, **step},
        ],
        "gates": gates,
    }
    watch = (fleet.server, *(a.process for a in online))
    with Traffic(online, examples(negative=True)):
        rollout_id = fleet.start_rollout(NEW, strategy, HEALTH)
        wait_until(
            lambda: fleet.rollout(rollout_id)["status"] == "succeeded",
            60,
            "the rollout to finish without the offline device",
            watch,
        )
    view = fleet.rollout(rollout_id)
    by_device = {d["device_id"]: d for d in view["devices"]}
    held = by_device[gone.device_id]
    assert held["status"] == "timed_out", held
    wave = view["waves"][held["wave"]]
    assert wave["status"] == "succeeded"
    # The wave settled on the timeout (the executor ticks every 0.2 s), not on the device.
    assert wave["settled_at"] - wave["started_at"] < timeout_s + 2.0, wave
    assert wave["metrics"]["timed_out"] == 1, wave["metrics"]
    assert all(by_device[a.device_id]["status"] == "succeeded" for a in online)
    assert fleet.device(gone.device_id)["reported_version"] == OLD  # the truth: not installed

    gone.process.start()  # it comes back: the retained desired state brings it to 2.0.0
    wait_until(lambda: gone.serving() == NEW, 60, "the returning device to serve 2.0.0")
    wait_until(
        lambda: fleet.rollout(rollout_id)["counts"] == {"succeeded": AGENTS},
        30,
        "the rollout to record the late device",
        fleet.processes,
    )
    reported = fleet.device(gone.device_id)
    assert (reported["reported_version"], reported["deployment_phase"]) == (NEW, "committed")
    late = {d["device_id"]: d for d in fleet.rollout(rollout_id)["devices"]}[gone.device_id]
    assert late["status"] == "succeeded" and "converged" in late["detail"], late


@dataclass
class DesiredLog:
    """Every desired state the broker delivers for some devices, retained ones included."""

    url: str
    device_ids: list[str]
    seen: dict[str, list[DesiredState]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> DesiredLog:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        host, port = self.url.removeprefix("mqtt://").split(":")
        connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=secrets.token_hex(6))
        names = {topic(d, Channel.DESIRED): d for d in self.device_ids}
        self.seen = {d: [] for d in self.device_ids}

        def on_connect(client: Any, *args: Any) -> None:
            client.subscribe([(name, 1) for name in names])
            connected.set()

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            if message.payload:
                with self.lock:
                    self.seen[names[message.topic]].append(from_json(DesiredState, message.payload))

        self.client.on_connect, self.client.on_message = on_connect, on_message
        self.client.connect(host, int(port), 30)
        self.client.loop_start()
        assert connected.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def of(self, device_id: str) -> list[DesiredState]:
        with self.lock:
            return list(self.seen[device_id])


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own: server processes on one broker share the ingest (shared
    subscriptions), so another test's server would take some of this fleet's messages."""
    with own_mosquitto(tmp_path) as broker:
        yield broker


@pytest.fixture
def own_server(
    tmp_path: Path, own_broker: Mosquitto, bundles: tuple[Path, dict[tuple[str, str], Path]]
) -> Iterator[Server]:
    """A server of this test's own (it gets killed), with the tiny bundles."""
    public, tars = bundles
    port, token = free_port(), secrets.token_urlsafe(16)
    process = server_process(tmp_path, own_broker, public, port, token).start()
    url = f"http://127.0.0.1:{port}"
    server = Server(url, token, process, tmp_path, public)
    try:
        wait_serving(url, process)
        upload(url, token, {key: tar for key, tar in tars.items() if key[0] == MODEL})
        yield server
    finally:
        server.process.stop()


def test_a_server_killed_mid_rollout_finishes_it_after_a_restart(
    own_server: Server, own_broker: Mosquitto
) -> None:
    fleet = new_fleet(own_server)
    steps = [
        {"size": {"kind": "count", "value": 1}, "bake_s": 1.5, "timeout_s": 30.0},
        {"size": {"kind": "count", "value": 2}, "bake_s": 1.5, "timeout_s": 30.0},
        {"size": {"kind": "percent", "value": 100}, "bake_s": 0.5, "timeout_s": 30.0},
    ]
    strategy = {"kind": "canary", "waves": steps, "gates": GATES}
    ids = [a.device_id for a in fleet.agents]
    try:
        with ExitStack() as stack:
            desired = stack.enter_context(DesiredLog(own_broker.url, ids))
            listeners = {
                d: stack.enter_context(FleetSide(own_broker.url, d, auto_ack=False)) for d in ids
            }
            with Traffic(fleet.agents, examples(negative=True)):
                rollout_id = fleet.start_rollout(NEW, strategy, HEALTH)
                wait_until(  # killed while the second wave's device installs or bakes
                    lambda: fleet.rollout(rollout_id)["waves"][1]["status"] != "pending",
                    60,
                    "the second wave to start",
                    fleet.processes,
                )
                kill(own_server.process)
                killed_at = time.time()
                time.sleep(1.0)
                own_server.process.start()  # same port, same data directory
                wait_serving(own_server.url, own_server.process)
                view = fleet.wait_rollout(rollout_id, "succeeded", 90)
                wait_until(
                    lambda: all(a.serving() == NEW for a in fleet.agents),
                    30,
                    "every agent to serve 2.0.0",
                    fleet.processes,
                )
            reports = {d: listener.of("report") for d, listener in listeners.items()}
            told = {d: desired.of(d) for d in ids}
    finally:
        stop_fleet(fleet)

    assert "republished the desired state" in own_server.process.output()
    assert [w["status"] for w in view["waves"]] == ["succeeded"] * 3
    assert view["counts"] == {"succeeded": AGENTS}
    assert [len(wave_devices(view, i)) for i in range(3)] == [1, 1, 2]
    # The second wave started before the kill and finished after it, on the restarted server.
    assert view["waves"][1]["started_at"] < killed_at < view["waves"][1]["finished_at"]
    for device_id in ids:
        # Told one version at a time: 1.0.0 (retained, from before), then 2.0.0 under one
        # deployment, repeated at most by the restart's republish, never back to 1.0.0.
        versions = [d.version for d in told[device_id]]
        assert versions and versions[-1] == NEW, versions
        first_new = versions.index(NEW)
        assert set(versions[:first_new]) <= {OLD} and set(versions[first_new:]) == {NEW}, versions
        news = {d.deployment_id for d in told[device_id] if d.version == NEW}
        assert len(news) == 1, told[device_id]
        assert all(d.shadow is None and not d.rollback for d in told[device_id])
        # The device's own history: one deployment of 2.0.0, from download to commit.
        mine = [r for r in reports[device_id] if r.version == NEW]
        assert {r.deployment_id for r in mine} == news, mine
        assert [r.phase.value for r in mine][-1] == "committed", mine
        since = reports[device_id].index(mine[0])
        assert all(r.version == NEW for r in reports[device_id][since:]), reports[device_id]
