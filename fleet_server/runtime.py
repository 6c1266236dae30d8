"""Everything one server process holds: settings, database, tokens, keys, broker, bridge.

``FleetRuntime.start`` raises a :class:`ConfigError` naming the problem (port in use, database
unreachable, unreadable key) before any HTTP port is opened, so ``edgefleet fleet serve`` can
fail with one clean line. ``close`` releases everything in reverse order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgefleet.bundle import VerifyKey, load_verify_key
from fleet_server.db import create_db_engine, create_schema, session_factory
from fleet_server.errors import ConfigError
from fleet_server.mqtt.bridge import MqttBridge, speaks_mqtt5
from fleet_server.mqtt.broker import EmbeddedBroker
from fleet_server.rollouts.executor import Executor
from fleet_server.settings import FleetSettings
from fleet_server.tokens import AdminToken, resolve_admin_token

log = logging.getLogger(__name__)


@dataclass
class FleetRuntime:
    settings: FleetSettings
    admin_token: AdminToken
    trusted_keys: tuple[VerifyKey, ...]
    engine: Engine
    sessions: sessionmaker[Session]
    mqtt_url: str
    bridge: MqttBridge
    executor: Executor | None = None
    broker: EmbeddedBroker | None = None
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, settings: FleetSettings, *, mqtt_wait_s: float = 10.0) -> FleetRuntime:
        for directory in (settings.data_dir, settings.artifacts_dir, settings.tmp_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"{directory}: cannot create the directory ({exc.strerror})"
                ) from exc
        admin_token = resolve_admin_token(settings)
        keys = load_trusted_keys(settings)
        engine = open_database(settings.sqlalchemy_url)
        broker: EmbeddedBroker | None = None
        try:
            if settings.mqtt_url is None:
                broker = EmbeddedBroker(port=settings.mqtt_port)
                broker.start()
                mqtt_url = broker.url
            else:
                mqtt_url = settings.mqtt_url
            sessions = session_factory(engine)
            shared = settings.mqtt_shared
            if shared is None:
                shared = broker is None and speaks_mqtt5(mqtt_url)
            bridge = MqttBridge(url=mqtt_url, sessions=sessions, shared=shared)
            bridge.start(wait_s=mqtt_wait_s)
            executor = None
            if settings.executor_enabled:
                executor = Executor(
                    engine=engine,
                    sessions=sessions,
                    publisher=bridge,
                    interval_s=settings.executor_interval_s,
                )
                executor.start()
        except BaseException:
            if broker is not None:
                broker.stop()
            engine.dispose()
            raise
        return cls(
            settings=settings,
            admin_token=admin_token,
            trusted_keys=keys,
            engine=engine,
            sessions=sessions,
            mqtt_url=mqtt_url,
            bridge=bridge,
            executor=executor,
            broker=broker,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.executor is not None:
            self.executor.stop()
        self.bridge.stop()
        if self.broker is not None:
            self.broker.stop()
        self.engine.dispose()


def load_trusted_keys(settings: FleetSettings) -> tuple[VerifyKey, ...]:
    """``settings.trusted_keys`` plus every ``data_dir/trusted_keys/*.pub``, by key id."""
    paths: list[Path] = list(settings.trusted_keys)
    if settings.trusted_keys_dir.is_dir():
        paths.extend(sorted(settings.trusted_keys_dir.glob("*.pub")))
    keys: dict[str, VerifyKey] = {}
    for path in paths:
        key = load_verify_key(path)  # SigningKeyError names the file
        keys[key.key_id] = key
    if keys:
        log.info("trusted bundle signing keys: %s", ", ".join(sorted(keys)))
    else:
        log.warning("%s", no_keys_message(settings))
    return tuple(keys.values())


def no_keys_message(settings: FleetSettings) -> str:
    return (
        "no trusted public key is configured, so model uploads are refused: start the server "
        f"with --trusted-key KEY.pub or copy the .pub file into {settings.trusted_keys_dir}/"
    )


def open_database(url: str) -> Engine:
    """Open the database and migrate it to the newest schema; ``postgresql://`` means psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database URL {url!r} is not valid ({exc})") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_db_engine(parsed.render_as_string(hide_password=False))
        create_schema(engine)
    except (SQLAlchemyError, ModuleNotFoundError) as exc:
        raise ConfigError(f"cannot open the database {shown}: {exc}") from exc
    log.info("database %s", shown)
    return engine
