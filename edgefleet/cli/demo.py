"""``edgefleet demo``: the whole product on one machine, every part a separate process.

It trains a tiny real model on scikit-learn's digits, compiles it into a signed int8 bundle,
starts a fleet server (SQLite and an in-process MQTT broker) and three agents, registers the
devices, assigns the model, sends predictions to each agent's local API, and prints what the
server saw. Everything is driven through the public CLI and HTTP APIs, as a user would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from edgefleet.bundle import MANIFEST_FILE, Manifest
from edgefleet.codec import from_json
from edgefleet.errors import EdgefleetError

PROFILE = "x86-64/avx512-vnni"
MODEL_NAME = "digits"
MODEL_VERSION = "1.0.0"
DEVICES = ("demo-device-1", "demo-device-2", "demo-device-3")
PREDICTIONS_PER_DEVICE = 50

_console = Console(highlight=False)


class DemoError(EdgefleetError):
    """A demo step failed; the message says which and where its log is."""


@dataclass
class Processes:
    """Background processes the demo started; all are stopped on exit."""

    log_dir: Path
    running: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "edgefleet", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.running.append((name, process))

    def check_alive(self) -> None:
        for name, process in self.running:
            if process.poll() is not None:
                raise DemoError(
                    f"{name} exited with code {process.returncode}; see {self.log_dir}/{name}.log"
                )

    def stop_all(self) -> None:
        for _, process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in self.running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def demo_command(
    work_dir: Annotated[
        Path, typer.Option(help="Where the demo keeps its keys, bundles, databases and logs.")
    ] = Path("demo-data"),
    keep: Annotated[bool, typer.Option(help="Keep the server and agents running at the end.")] = (
        False
    ),
) -> None:
    """Run the end-to-end demo: train, compile, serve, deploy to three agents, predict."""
    started = time.monotonic()
    if work_dir.exists():
        shutil.rmtree(work_dir)
    logs = work_dir / "logs"
    logs.mkdir(parents=True)
    processes = Processes(logs)
    try:
        _run(work_dir, processes, keep)
    finally:
        processes.stop_all()
    _console.print(f"[bold green]demo finished in {time.monotonic() - started:.0f} s[/]")


def _run(work: Path, processes: Processes, keep: bool) -> None:
    token = secrets.token_urlsafe(24)
    server_url = f"http://127.0.0.1:{_free_port()}"
    client = ["--server", server_url, "--token", token]

    with _step("1/7 generate a signing key pair"):
        _cli(work, "keys", ["keys", "generate", "--out", str(work / "keys"), "--name", "demo"])
    with _step("2/7 train a CNN on scikit-learn digits and write calibration/eval data"):
        _python(work, "data", ["-m", "compiler.examples.digits", "--out", str(work / "data")])
    with _step(f"3/7 compile to a signed int8 bundle for {PROFILE}"):
        _cli(
            work,
            "compile",
            [
                "compile",
                "compiler.examples.digits:trained_cnn",
                "--profile",
                PROFILE,
                "--calibration",
                str(work / "data" / "calibration.npy"),
                "--eval",
                str(work / "data" / "eval.npz"),
                "--key",
                str(work / "keys" / "demo.key"),
                "--name",
                MODEL_NAME,
                "--version",
                MODEL_VERSION,
                "--out",
                str(work / "bundles"),
            ],
        )
    bundle = next((work / "bundles").glob("*.tar"))
    _print_evidence(bundle.with_suffix(""), work / "logs" / "compile.log")

    with _step("4/7 start the fleet server (SQLite, in-process MQTT broker)"):
        port = server_url.rsplit(":", 1)[1]
        processes.start(
            "server",
            [
                "fleet",
                "serve",
                "--port",
                port,
                "--data-dir",
                str(work / "server"),
                "--mqtt-port",
                "0",
                "--admin-token",
                token,
                "--trusted-key",
                str(work / "keys" / "demo.pub"),
            ],
        )
        _wait_for(lambda: _get_json(f"{server_url}/api/v1/info") is not None, processes, 60)
    with _step("5/7 upload the bundle, register three devices, start their agents"):
        _cli(work, "push", ["fleet", "push", str(bundle), *client])
        agent_urls: dict[str, str] = {}
        for device in DEVICES:
            registered = _cli(
                work,
                f"register-{device}",
                ["fleet", "register", device, "--profile", PROFILE, "--json", *client],
            )
            device_token = json.loads(registered)["token"]
            listen = f"127.0.0.1:{_free_port()}"
            agent_urls[device] = f"http://{listen}"
            processes.start(
                f"agent-{device}",
                [
                    "agent",
                    "run",
                    "--server",
                    server_url,
                    "--device-id",
                    device,
                    "--token",
                    device_token,
                    "--profile",
                    PROFILE,
                    "--data-dir",
                    str(work / "agents" / device),
                    "--listen",
                    listen,
                    "--trusted-key",
                    str(work / "keys" / "demo.pub"),
                    "--telemetry-interval",
                    "1",
                ],
            )
    with _step(f"6/7 assign {MODEL_NAME} {MODEL_VERSION} and wait for every agent to serve it"):
        for device in DEVICES:
            _cli(
                work,
                f"assign-{device}",
                [
                    "fleet",
                    "assign",
                    device,
                    "--model",
                    MODEL_NAME,
                    "--version",
                    MODEL_VERSION,
                    *client,
                ],
            )
        _wait_for(
            lambda: all(_health_version(url) == MODEL_VERSION for url in agent_urls.values()),
            processes,
            90,
        )
    with _step(f"7/7 send {PREDICTIONS_PER_DEVICE} digits to each agent; wait for the server"):
        sent, correct = _predict(work, agent_urls)
        expected = PREDICTIONS_PER_DEVICE * len(DEVICES)
        _wait_for(
            lambda: _received(server_url, token) >= expected,
            processes,
            60,
        )
    _print_fleet(server_url, token, sent, correct)
    if keep:
        _console.print(f"server {server_url}, admin token {token}; Ctrl-C stops everything")
        while True:
            processes.check_alive()
            time.sleep(1)


def _predict(work: Path, agent_urls: dict[str, str]) -> tuple[dict[str, int], dict[str, int]]:
    data = np.load(work / "data" / "eval.npz")
    images, labels = data["x"], data["y"]
    sent: dict[str, int] = {}
    correct: dict[str, int] = {}
    for index, (device, url) in enumerate(agent_urls.items()):
        sent[device] = correct[device] = 0
        start = index * PREDICTIONS_PER_DEVICE
        for image, label in zip(
            images[start : start + PREDICTIONS_PER_DEVICE],
            labels[start : start + PREDICTIONS_PER_DEVICE],
            strict=True,
        ):
            reply = _post_json(f"{url}/v1/predict", {"input": image.tolist()})
            sent[device] += 1
            correct[device] += int(int(np.argmax(reply["output"])) == int(label))
    return sent, correct


def _print_fleet(
    server_url: str, token: str, sent: dict[str, int], correct: dict[str, int]
) -> None:
    devices = _get_json(f"{server_url}/api/v1/devices", token) or []
    table = Table(title="Fleet, as the server sees it")
    for column in ("device", "online", "active version", "sent", "correct", "received"):
        table.add_column(column)
    for device in devices:
        name = device["device_id"]
        table.add_row(
            name,
            "yes" if device["online"] else "no",
            f"{device['reported_model']} {device['reported_version']}",
            str(sent.get(name, 0)),
            str(correct.get(name, 0)),
            str(device["predictions_received"]),
        )
    _console.print(table)


def _print_evidence(bundle_dir: Path, log: Path) -> None:
    manifest = from_json(Manifest, (bundle_dir / MANIFEST_FILE).read_bytes())
    evidence = manifest.evidence
    facts = [f"{manifest.precision}, {evidence.size_bytes / 1024:.1f} KiB"]
    if evidence.float_size_bytes:
        facts.append(f"{evidence.size_bytes / evidence.float_size_bytes:.2f}x the fp32 size")
    if evidence.top1_agreement is not None:
        facts.append(f"top-1 agreement with fp32 {evidence.top1_agreement:.1%}")
    if evidence.host_latency_ms is not None:
        facts.append(f"host latency {evidence.host_latency_ms:.3f} ms")
    _console.print(f"  {'; '.join(facts)} (full table: {log})")


def _received(server_url: str, token: str) -> int:
    devices = _get_json(f"{server_url}/api/v1/devices", token) or []
    return sum(int(device["predictions_received"]) for device in devices)


def _health_version(url: str) -> str | None:
    health = _get_json(f"{url}/v1/health")
    return None if health is None else health.get("version")


@contextmanager
def _step(title: str) -> Iterator[None]:
    began = time.monotonic()
    with _console.status(title):
        yield
    _console.print(f"[green]✓[/] {title} [dim]({time.monotonic() - began:.1f} s)[/]")


def _cli(work: Path, name: str, args: list[str]) -> str:
    return _python(work, name, ["-m", "edgefleet", *args])


def _python(work: Path, name: str, args: list[str]) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    (work / "logs" / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise DemoError(f"step {name!r} failed: {last[0]} (log: {work}/logs/{name}.log)")
    return result.stdout


def _wait_for(condition: Callable[[], bool], processes: Processes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check_alive()
        if condition():
            return
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout:.0f} s; logs are in {processes.log_dir}")


def _get_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
