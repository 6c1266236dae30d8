"""Broker down for a while under load: nothing is lost, the server holds every record once.

Every part is a real process: the fleet server (``edgefleet fleet serve``, SQLite), Mosquitto,
and the agent in a device-like interpreter. Concurrent clients keep predicting through the
agent's local API while Mosquitto is stopped for several seconds and started again on the
same port; then, with the broker down again, the agent is killed with SIGKILL and restarted
on the same data directory, serves more predictions, and the broker comes back. Records that
reached the server but whose acknowledgement was lost are sent again; the server stores by
(device, seq), so it must end with exactly the records the clients were answered: every seq
from 1 to N once, every answered record id once, and a received count of N.
"""

from __future__ import annotations

import http.client
import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.bundle import generate_key_pair, load_signing_key
from tests.edge_agent.helpers import IN_FEATURES, PROFILE, BuiltBundle, FleetSide, build_bundle
from tests.support.processes import Process, http_json, run_cli, try_json, wait_until
from tests.support.services import Mosquitto, free_port, start_mosquitto

pytestmark = pytest.mark.e2e

DEVICE = "dev-outage"
CLIENTS = 6
OUTAGE_S = 4.0


@dataclass
class Rig:
    url: str
    token: str
    server: Process
    broker: Mosquitto
    bundle: BuiltBundle
    public_key: Path
    work: Path

    def api(self, path: str) -> Any:
        status, body = http_json("GET", f"{self.url}/api/v1{path}", token=self.token)
        assert status == 200, (path, status, body)
        return body

    def received(self) -> int:
        return int(self.api(f"/devices/{DEVICE}")["predictions_received"])


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    generate_key_pair(tmp_path / "keys", "fleet")
    key = load_signing_key(tmp_path / "keys" / "fleet.key")
    bundle = build_bundle(tmp_path / "build", key, version="1.0.0")
    (tmp_path / "mosquitto").mkdir()
    broker = start_mosquitto(tmp_path / "mosquitto")
    url, token = f"http://127.0.0.1:{free_port()}", secrets.token_urlsafe(16)
    server = Process(
        "server",
        [
            "fleet", "serve", "--port", url.rsplit(":", 1)[1],
            "--data-dir", str(tmp_path / "server"), "--mqtt", broker.url,
            "--admin-token", token, "--trusted-key", str(tmp_path / "keys" / "fleet.pub"),
        ],
        tmp_path / "server.log",
    ).start()  # fmt: skip
    try:
        wait_until(lambda: try_json(f"{url}/api/v1/info") is not None, 60, "server", (server,))
        yield Rig(url, token, server, broker, bundle, tmp_path / "keys" / "fleet.pub", tmp_path)
    finally:
        server.stop()
        broker.stop()


@dataclass
class Load:
    """Concurrent keep-alive clients predicting singles and batches of 4 until stopped."""

    port: int
    record_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def count(self) -> int:
        with self.lock:
            return len(self.record_ids)

    def start(self, clients: int = CLIENTS) -> None:
        self.stop.clear()
        self.threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def predict(self, conn: http.client.HTTPConnection, body: dict[str, Any]) -> None:
        conn.request("POST", "/v1/predict", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        if response.status != 200 or answer["logged"] is not True:
            # durable mode: "logged" true says the record was committed before the answer
            with self.lock:
                self.failures.append(f"{response.status} {answer}")
            return
        ids = answer["record_ids"] if "inputs" in body else [answer["record_id"]]
        with self.lock:
            self.record_ids.extend(ids)

    def _client(self, n: int) -> None:
        rng = np.random.default_rng(n)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            i = 0
            while not self.stop.is_set():
                if i % 5 == 4:
                    body: dict[str, Any] = {"inputs": rng.uniform(size=(4, IN_FEATURES)).tolist()}
                else:
                    body = {"input": rng.uniform(size=IN_FEATURES).tolist()}
                try:
                    self.predict(conn, body)
                except (OSError, http.client.HTTPException) as exc:
                    with self.lock:
                        self.failures.append(f"client {n}: {exc!r}")
                    return
                i += 1
                time.sleep(0.004)
        finally:
            conn.close()


def start_agent(rig: Rig, device_token: str, port: int) -> Process:
    return Process(
        "agent",
        [
            "agent", "run", "--server", rig.url, "--device-id", DEVICE, "--token", device_token,
            "--profile", PROFILE, "--data-dir", str(rig.work / "agent"),
            "--listen", f"127.0.0.1:{port}", "--trusted-key", str(rig.public_key),
            "--telemetry-interval", "0.5", "--ack-timeout", "1",
        ],
        rig.work / "agent.log",
        device_like=True,
    ).start()  # fmt: skip


def serving(port: int) -> bool:
    return (try_json(f"http://127.0.0.1:{port}/v1/health") or {}).get("version") == "1.0.0"


def test_a_broker_outage_under_load_and_an_agent_killed_offline_lose_nothing_and_duplicate_nothing(
    rig: Rig,
) -> None:
    client = ("--server", rig.url, "--token", rig.token)
    registered = run_cli("fleet", "register", DEVICE, "--profile", PROFILE, "--json", *client)
    device_token = json.loads(registered.stdout)["token"]
    port = free_port()
    agent = start_agent(rig, device_token, port)
    load = Load(port)
    wire = FleetSide(rig.broker.url, DEVICE, auto_ack=False)  # sees what goes over the broker
    wire.client.reconnect_delay_set(1, 1)
    try:
        wire.__enter__()
        run_cli("fleet", "push", str(rig.bundle.tar), *client)
        run_cli("fleet", "assign", DEVICE, "--model", "tiny", "--version", "1.0.0", *client)
        wait_until(lambda: serving(port), 60, "the agent to serve 1.0.0", (agent, rig.server))

        # 1. Outage under load: clients keep predicting while Mosquitto is down for seconds.
        load.start()
        wait_until(lambda: load.count() >= 200, 60, "200 records before the outage", (agent,))
        rig.broker.stop()
        before_outage = load.count()
        time.sleep(OUTAGE_S)
        during_outage = load.count() - before_outage
        rig.broker.start()  # the same port
        time.sleep(2.0)
        load.finish()
        assert load.failures == []
        assert during_outage >= 100, f"only {during_outage} records while the broker was down"

        # The agent must be on a committed model before it is killed (not this test's topic).
        wait_until(
            lambda: rig.api(f"/devices/{DEVICE}")["deployment_phase"] == "committed",
            90,
            "the deployment to commit",
            (agent, rig.server),
        )

        # 2. Broker down again; SIGKILL the agent with records in its outbox; restart it.
        rig.broker.stop()
        load.start(clients=3)
        wait_until(lambda: load.count() >= before_outage + during_outage + 150, 60, "load")
        load.finish()
        time.sleep(1.5)  # past the ack timeout: the agent has tried to re-send in vain
        assert agent.popen is not None
        agent.popen.send_signal(signal.SIGKILL)
        assert agent.popen.wait(timeout=10) == -signal.SIGKILL
        agent.popen = None
        agent = start_agent(rig, device_token, port)
        wait_until(lambda: serving(port), 60, "the restarted agent to serve", (agent,))
        killed_at = load.count()
        load.start(clients=3)
        wait_until(lambda: load.count() >= killed_at + 100, 60, "load after restart", (agent,))
        load.finish()
        assert load.failures == []
        rig.broker.start()

        total = load.count()
        try:
            wait_until(lambda: rig.received() >= total, 120, "every record", (agent, rig.server))
        except AssertionError as exc:
            stored = {r["seq"] for r in rig.api(f"/devices/{DEVICE}/predictions?limit=10000")}
            missing = sorted(set(range(1, total + 1)) - stored)
            on_wire = sorted(set(missing) & set(wire.seqs()))
            raise AssertionError(
                f"{len(missing)} of {total} records missing at the server "
                f"({missing[:3]}...{missing[-3:]}); {len(on_wire)} of them went over the broker"
            ) from exc
        time.sleep(2.0)  # late duplicates, if any, would arrive now
        records = rig.api(f"/devices/{DEVICE}/predictions?limit=10000")
        seqs = [record["seq"] for record in records]
        assert sorted(seqs) == list(range(1, total + 1))
        stored_ids = [record["record_id"] for record in records]
        assert len(set(stored_ids)) == len(stored_ids) == total
        assert set(stored_ids) == set(load.record_ids)
        assert rig.received() == total
        wait_until(
            lambda: (
                (rig.api(f"/devices/{DEVICE}")["last_telemetry"] or {}).get("outbox_depth") == 0
            ),
            30,
            "the agent's outbox to drain",
            (agent,),
        )
    finally:
        wire.__exit__()
        load.finish()
        if rig.broker.process is None:
            rig.broker.start()
        agent.stop()
