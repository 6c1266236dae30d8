"""A deployment's outcome reaches the server even when it happened during an outage.

Every part is a real process: the fleet server (SQLite), Mosquitto, and one agent in a
device-like interpreter that finds the broker through the server (as on a device). The agent
is stopped where it matters by its test hook (``EDGEFLEET_AGENT_TEST_PAUSE_IN``, see
``edge_agent.update.testhook``):

- a golden check fails while the broker *and* the server are down: the report goes nowhere
  (paho queues it, the broker comes back before the server's bridge, nobody is subscribed);
- the agent is killed (SIGKILL) right after it persisted a rollback, before reporting it.

Either way the server must end with the deployment marked failed / rolled back and the device
on its old model: the agent re-publishes the outcome after a reconnect or restart until the
broker acknowledges it, and answers the desired state the restarted server republishes. The
server's deployment history holds the outcome once, however many copies arrived.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.update.testhook import PAUSE_ENV
from edgefleet.bundle import generate_key_pair, load_signing_key
from tests.e2e.rollout_fleet import (
    MODEL,
    Agent,
    Fleet,
    Server,
    server_process,
    start_agent,
    upload,
    wait_serving,
)
from tests.edge_agent.helpers import build_bundle
from tests.support.processes import Process, run_cli, try_json, wait_until
from tests.support.services import Mosquitto, free_port, own_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OLD, BAD_GOLDEN, GOOD = "1.0.0", "2.0.0", "3.0.0"
SLOW = 60.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with own_mosquitto(tmp_path) as broker:
        yield broker


@pytest.fixture
def server(tmp_path: Path, broker: Mosquitto) -> Iterator[Server]:
    """A server of this test's own (it gets stopped), with tiny 1.0.0, 2.0.0 whose golden
    samples do not match its model, and 3.0.0."""
    private, public = generate_key_pair(tmp_path / "keys", "fleet")
    key = load_signing_key(private)
    build = tmp_path / "build"
    tars = {
        (MODEL, OLD): build_bundle(build, key, version=OLD, weights_version=1).tar,
        (MODEL, BAD_GOLDEN): build_bundle(
            build, key, version=BAD_GOLDEN, weights_version=2, golden_offset=0.5
        ).tar,
        (MODEL, GOOD): build_bundle(build, key, version=GOOD, weights_version=3).tar,
    }
    port, token = free_port(), secrets.token_urlsafe(16)
    process = server_process(tmp_path, broker, public, port, token).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process)
        upload(url, token, tars)
        yield Server(url, token, process, tmp_path, public)
    finally:
        process.stop()


def one_device_fleet(server: Server, pause: str | None, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """One agent serving tiny 1.0.0 (installed by a rollout without a health window), then
    taken out of its cohort so that assignments by hand stay."""
    cohort = f"c{secrets.token_hex(4)}"
    fleet = Fleet(server.url, server.token, server.process, cohort)
    fleet.agents.append(launch(fleet, server, f"{cohort}-0", pause, monkeypatch))
    client = ("--server", fleet.url, "--token", fleet.token)
    run_cli("cohort", "create", cohort, "--select", f"cohort={cohort}", "--json", *client)
    fleet.converge(OLD)
    # Out of the cohort, so the executor does not put it back on 1.0.0 after an assignment.
    fleet.api("PATCH", f"/devices/{cohort}-0/labels", {"remove": ["cohort"]})
    return fleet


def launch(
    fleet: Fleet, server: Server, device_id: str, pause: str | None, mp: pytest.MonkeyPatch
) -> Agent:
    with mp.context() as env:
        if pause is None:
            env.delenv(PAUSE_ENV, raising=False)
        else:
            env.setenv(PAUSE_ENV, pause)
        if fleet.agents:  # a restart: the device is registered already, same data directory
            agent = fleet.agents[0]
            agent.process.start()
            wait_until(lambda: agent.serving() is not None, SLOW, "the agent to serve")
            return agent
        return start_agent(fleet, server, device_id)


def sigkill(process: Process) -> None:
    assert process.popen is not None
    os.kill(process.popen.pid, signal.SIGKILL)
    assert process.popen.wait(15) == -signal.SIGKILL
    process.popen = None


def paused(server: Server, agent: Agent, state: str) -> Path:
    marker = server.work / agent.device_id / f"paused-in-{state}"
    wait_until(marker.exists, SLOW, f"the agent to pause in {state}", (agent.process,))
    return marker


def persisted_state(server: Server, agent: Agent) -> dict[str, Any]:
    return dict(json.loads((server.work / agent.device_id / "state.json").read_text()))


def stored_reports(server: Server, agent: Agent, phase: str) -> list[tuple[str, str]]:
    """(deployment, detail) of the device's ``phase`` reports in the server's history."""
    with sqlite3.connect(server.work / "server" / "fleet.db") as db:
        rows = db.execute(
            "SELECT deployment_id, detail FROM deployment_reports"
            " WHERE device_id = ? AND phase = ? ORDER BY id",
            (agent.device_id, phase),
        ).fetchall()
    return [(str(deployment), str(detail)) for deployment, detail in rows]


def assign(fleet: Fleet, agent: Agent, version: str) -> str:
    reply = fleet.api(
        "PUT", f"/devices/{agent.device_id}/desired", {"model": MODEL, "version": version}
    )
    return str(reply["deployment_id"])


def test_a_golden_failure_while_broker_and_server_are_down_reaches_the_server(
    server: Server, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = one_device_fleet(server, f"staging@{BAD_GOLDEN}", monkeypatch)
    agent = fleet.agents[0]
    try:
        assign(fleet, agent, BAD_GOLDEN)
        marker = paused(server, agent, "staging")
        wait_until(
            lambda: fleet.device(agent.device_id)["deployment_phase"] == "staging",
            SLOW,
            "the server to see staging",
            fleet.processes,
        )
        server.process.stop()
        broker.stop()
        marker.unlink()  # the agent goes on: the golden check fails with nobody listening
        wait_until(
            lambda: persisted_state(server, agent)["deployment"]["state"] == "failed",
            SLOW,
            "the failure to be persisted",
            (agent.process,),
        )
        broker.start()  # before the server: the agent reconnects to a broker nobody reads
        wait_until(
            lambda: (try_json(f"{agent.url}/v1/health") or {}).get("mqtt", {}).get("connected"),
            SLOW,
            "the agent to reconnect",
            (agent.process,),
        )
        server.process.start()
        wait_serving(server.url, server.process)
        wait_until(
            lambda: fleet.device(agent.device_id)["deployment_phase"] == "failed",
            SLOW,
            "the server to learn of the failure",
            fleet.processes,
        )
        device = fleet.device(agent.device_id)
        assert device["deployment_detail"].startswith("golden.npz"), device
        assert (device["reported_version"], device["desired_version"]) == (OLD, BAD_GOLDEN)
        assert agent.serving() == OLD
    finally:
        agent.process.stop()


def test_a_rollback_persisted_just_before_a_sigkill_is_reported_after_the_restart(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = one_device_fleet(server, f"validating@{GOOD}", monkeypatch)
    agent = fleet.agents[0]
    try:
        deployment_id = assign(fleet, agent, GOOD)
        marker = paused(server, agent, "validating")
        sigkill(agent.process)  # killed while validating: the restart rolls back
        marker.unlink()
        launch(fleet, server, agent.device_id, f"rolled_back@{GOOD}", monkeypatch)
        marker = paused(server, agent, "rolled_back")
        sigkill(agent.process)  # persisted, not yet reported
        marker.unlink()
        assert persisted_state(server, agent)["deployment"]["state"] == "rolled_back"
        launch(fleet, server, agent.device_id, None, monkeypatch)
        wait_until(
            lambda: fleet.device(agent.device_id)["deployment_phase"] == "rolled_back",
            SLOW,
            "the server to learn of the rollback",
            fleet.processes,
        )
        device = fleet.device(agent.device_id)
        assert device["deployment_detail"] == "agent restarted", device
        assert (device["reported_version"], device["desired_version"]) == (OLD, GOOD)
        assert agent.serving() == OLD
        # Sent twice after the restart: as never acknowledged, and as the answer to the
        # retained desired state. Stored once.
        acked = server.work / agent.device_id / "outcome-acked"
        wait_until(acked.exists, SLOW, "the broker to acknowledge the rollback", fleet.processes)
        time.sleep(1.0)  # the other copy, had it been stored, is in by now
        assert stored_reports(server, agent, "rolled_back") == [(deployment_id, "agent restarted")]
    finally:
        agent.process.stop()
