"""Start and stop real services for tests: Mosquitto on a free port, PostgreSQL schemas."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence {persistence}
persistence_location {data}/
max_queued_messages 0
max_inflight_messages 0
log_dest file {data}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Mosquitto:
    """A real Mosquitto broker process. ``stop``/``start`` keep the port (for outage tests)."""

    data_dir: Path
    port: int
    persistence: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed: apt-get install -y mosquitto")
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(
            MOSQUITTO_CONF.format(
                port=self.port,
                data=self.data_dir,
                persistence="true" if self.persistence else "false",
            )
        )
        self.process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def start_mosquitto(data_dir: Path, *, persistence: bool = False) -> Mosquitto:
    broker = Mosquitto(data_dir=data_dir, port=free_port(), persistence=persistence)
    broker.start()
    return broker


def postgres_url(url: str) -> str:
    """Return ``url`` if PostgreSQL answers there, else fail loudly (never skip silently)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    except sqlalchemy.exc.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {url}; start it (see .ci/run) or set "
            f"EDGEFLEET_TEST_POSTGRES ({exc.orig})"
        ) from exc
    finally:
        engine.dispose()
    return url


@contextlib.contextmanager
def own_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of one test's own, in ``tmp_path/broker``, stopped afterwards: for tests that
    stop and start the broker, or whose server must not share a broker with other tests'."""
    (tmp_path / "broker").mkdir()
    broker = start_mosquitto(tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.stop()
