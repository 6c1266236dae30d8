"""An in-process MQTT 3.1.1 broker (amqtt) for the zero-set-up default.

It runs on its own thread with its own asyncio loop, bound to ``127.0.0.1`` explicitly (amqtt
would bind ``0.0.0.0``), with only the anonymous-auth plugin: the default packet logger and
``$SYS`` plugins cost half its throughput. For a real fleet, point ``--mqtt`` at Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from typing import Any

from fleet_server.errors import ConfigError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0


def port_in_use_error(host: str, port: int) -> ConfigError:
    return ConfigError(
        f"MQTT port {port} on {host} is already in use: pass --mqtt-port 0 to pick a free "
        "port, or --mqtt mqtt://HOST:PORT to use a broker that is already running"
    )


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise port_in_use_error(host, port) from exc
            raise ConfigError(
                f"cannot bind the MQTT broker to {host}:{port} ({exc.strerror})"
            ) from exc


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """``start()`` binds and serves; ``stop()`` shuts down and joins the thread."""

    def __init__(self, *, port: int = 1883, host: str = LOOPBACK) -> None:
        self.host = host
        self.requested_port = port
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        from amqtt.errors import BrokerError

        self.port = self.requested_port or _free_port(self.host)
        _check_port_free(self.host, self.port)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name="edgefleet-mqtt-broker", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        future = asyncio.run_coroutine_threadsafe(self._start_broker(), loop)
        try:
            self._broker = future.result(_START_TIMEOUT_S)
        except BrokerError as exc:
            self._stop_loop()
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                raise port_in_use_error(self.host, self.port) from exc
            raise ConfigError(f"the embedded MQTT broker did not start: {exc}") from exc
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s", self.url)

    async def _start_broker(self) -> Any:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        await broker.start()
        return broker

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None:
            return
        if broker is not None:
            future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                future.result(_STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning(
                    "the embedded MQTT broker did not shut down within %ss", _STOP_TIMEOUT_S
                )
        self._broker = None
        self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(_cancel_pending(), loop).result(_STOP_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)
        loop.close()
        self._loop = self._thread = None


async def _cancel_pending() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
