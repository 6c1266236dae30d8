"""Run the fleet server: in the foreground (``edgefleet fleet serve``) or on a thread.

The HTTP socket is bound and the runtime started before uvicorn runs, so a port in use or an
unreachable database ends with one clean error, and port 0 works (the bound port is logged).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass

import uvicorn

from fleet_server.app import create_app
from fleet_server.errors import ConfigError
from fleet_server.runtime import FleetRuntime
from fleet_server.settings import FleetSettings

log = logging.getLogger("fleet_server")

_QUIET_LOGGERS = ("amqtt", "transitions")


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"HTTP port {port} on {host} is already in use: pass --port with a free port"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def startup_line(url: str, runtime: FleetRuntime, token_source: str) -> str:
    mqtt = f"{runtime.mqtt_url} (embedded)" if runtime.broker is not None else runtime.mqtt_url
    where = f"in {runtime.admin_token.file}" if runtime.admin_token.file else f"from {token_source}"
    return f"Edgefleet fleet server on {url} | MQTT {mqtt} | admin token {where}"


def serve(settings: FleetSettings, *, token_source: str = "settings") -> None:
    """Serve until interrupted. Raises :class:`ConfigError` for what prevents starting."""
    configure_logging()
    sock = bind_http(settings.host, settings.port)
    try:
        runtime = FleetRuntime.start(settings)
        try:
            port = int(sock.getsockname()[1])
            app = create_app(settings, runtime=runtime)
            log.info("%s", startup_line(http_url(settings.host, port), runtime, token_source))
            config = uvicorn.Config(
                app, host=settings.host, port=port, log_config=None, lifespan="on"
            )
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            runtime.close()
    finally:
        sock.close()


@dataclass
class ServerThread:
    """A fleet server on a background thread, for tests and in-process demos."""

    url: str
    runtime: FleetRuntime
    server: uvicorn.Server
    thread: threading.Thread

    @classmethod
    def start(cls, settings: FleetSettings, *, timeout: float = 20.0) -> ServerThread:
        sock = bind_http(settings.host, settings.port)
        try:
            runtime = FleetRuntime.start(settings)
        except BaseException:
            sock.close()
            raise
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(settings, runtime=runtime),
            host=settings.host,
            port=port,
            log_config=None,
            lifespan="on",
            access_log=False,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="edgefleet-fleet-http", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                runtime.close()
                sock.close()
                raise ConfigError(f"the fleet server did not start on {settings.host}:{port}")
            time.sleep(0.01)
        return cls(url=http_url(settings.host, port), runtime=runtime, server=server, thread=thread)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.runtime.close()
