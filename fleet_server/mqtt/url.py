"""Parse ``mqtt://[user[:password]@]host[:port]`` broker URLs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from fleet_server.errors import ConfigError

DEFAULT_MQTT_PORT = 1883


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ConfigError(
            f"MQTT URL {url!r}: scheme must be mqtt:// (TLS brokers are not supported yet)"
        )
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError as exc:
        raise ConfigError(f"MQTT URL {url!r}: {exc}") from exc
    if not parts.hostname:
        raise ConfigError(f"MQTT URL {url!r}: no host")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
