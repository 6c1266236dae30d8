"""``edgefleet fleet serve`` as a real process: defaults, the startup line, clean errors."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from edgefleet.protocol.messages import DeviceState, Status
from edgefleet.protocol.topics import Channel, topic
from tests.fleet_server.conftest import Keys, MqttProbe
from tests.support.services import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STARTUP = re.compile(
    r"Edgefleet fleet server on (?P<url>http://\S+) \| MQTT (?P<mqtt>mqtt://\S+) \(embedded\) "
    r"\| admin token in (?P<token>\S+)"
)


def edgefleet(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edgefleet", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )


def wait_for_line(
    process: subprocess.Popen[bytes], log: Path, pattern: re.Pattern[str]
) -> re.Match[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace"))
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no startup line; output:\n{log.read_text(errors='replace')}")


@pytest.fixture
def served(
    tmp_path: Path, keys: Keys
) -> Iterator[tuple[re.Match[str], Path, subprocess.Popen[bytes]]]:
    data_dir = tmp_path / "data"
    (data_dir / "trusted_keys").mkdir(parents=True)
    (data_dir / "trusted_keys" / "release.pub").write_bytes(keys.public.read_bytes())
    log = tmp_path / "serve.log"
    process = edgefleet(
        "fleet",
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(data_dir),
        "--mqtt-port",
        "0",
        log=log,
    )
    try:
        yield wait_for_line(process, log, STARTUP), data_dir, process
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_with_defaults_generates_a_token_and_ingests_over_the_embedded_broker(
    served: tuple[re.Match[str], Path, subprocess.Popen[bytes]],
    bundle_tar: Path,
    probe_factory: Callable[[str], MqttProbe],
) -> None:
    line, data_dir, _ = served
    token_file = data_dir / "admin.token"
    assert Path(line["token"]) == token_file.resolve()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert (data_dir / "fleet.db").is_file()
    auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    with httpx.Client(base_url=f"{line['url']}/api/v1", timeout=30) as http:
        assert http.get("/info").json()["mqtt_url"] == line["mqtt"]
        uploaded = http.post("/models", content=bundle_tar.read_bytes(), headers=auth)
        assert uploaded.status_code == 201, uploaded.text  # key from DATA_DIR/trusted_keys
        assert (data_dir / "artifacts" / f"{uploaded.json()['sha256']}.tar").is_file()
        assert (
            http.post(
                "/devices", json={"device_id": "p1", "profile": "raspberry-pi/4b"}, headers=auth
            ).status_code
            == 201
        )

        agent = probe_factory(line["mqtt"])
        status = Status(state=DeviceState.ONLINE, profile="raspberry-pi/4b", active_version="0.9.0")
        agent.publish(topic("p1", Channel.STATUS), status.to_bytes(), retain=True)
        deadline = time.monotonic() + 10
        while not (view := http.get("/devices/p1", headers=auth).json())["online"]:
            assert time.monotonic() < deadline, view
            time.sleep(0.05)
        assert view["reported_version"] == "0.9.0"


def test_a_busy_mqtt_port_fails_with_one_clean_line(
    served: tuple[re.Match[str], Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    line, _, _ = served
    busy = line["mqtt"].rsplit(":", 1)[1]
    log = tmp_path / "second.log"
    second = edgefleet(
        "fleet",
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "other"),
        "--mqtt-port",
        busy,
        log=log,
    )
    assert second.wait(timeout=60) == 1
    output = log.read_text()
    assert f"MQTT port {busy} on 127.0.0.1 is already in use" in output
    assert "--mqtt-port 0" in output and "Traceback" not in output
