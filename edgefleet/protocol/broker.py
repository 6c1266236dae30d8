"""MQTT broker URLs, ``mqtt://[user[:password]@]host[:port]``, parsed the same way by agent and
server."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from edgefleet.errors import EdgefleetError

DEFAULT_MQTT_PORT = 1883


class BrokerUrlError(EdgefleetError):
    """A broker URL that is not ``mqtt://host:port``; the message says what is wrong."""


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
    """Parse a broker URL (default port 1883); raises :class:`BrokerUrlError` naming the fault."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise _bad(url, "the scheme must be mqtt:// (TLS brokers are not supported yet)")
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError as exc:
        raise _bad(url, f"invalid port ({exc})") from exc
    if not parts.hostname:
        raise _bad(url, "no host")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _bad(url: str, reason: str) -> BrokerUrlError:
    return BrokerUrlError(f"MQTT URL {url!r} must look like mqtt://host:port: {reason}")
