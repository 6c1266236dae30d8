"""Run Edgefleet parts as real processes for end-to-end tests, and talk to them over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEVICE_SITE = Path(__file__).resolve().parent / "device_site"


@dataclass
class Process:
    """An ``edgefleet`` sub-command running in the background, its output in a log file."""

    name: str
    args: list[str]
    log: Path
    device_like: bool = False
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Process:
        env = dict(os.environ)
        if self.device_like:  # the agent must run where torch, FastAPI, SQLAlchemy are absent
            env["PYTHONPATH"] = os.pathsep.join([str(DEVICE_SITE), str(ROOT)])
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "edgefleet", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        code = self.popen.returncode
        self.popen = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet", *args], capture_output=True, text=True, cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(f"edgefleet {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    watch: tuple[Process, ...] = (),
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in watch:
            if not process.alive():
                raise AssertionError(f"{process.name} died:\n{process.output()[-4000:]}")
        if condition():
            return
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in watch)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


def http_json(
    method: str, url: str, *, token: str | None = None, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if raw is not None:
        request.add_header("Content-Type", "application/x-tar")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def try_json(url: str, token: str | None = None) -> Any:
    try:
        status, body = http_json("GET", url, token=token)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return body if status == 200 else None
