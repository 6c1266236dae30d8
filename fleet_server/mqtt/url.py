"""Broker URLs for the server: the shared parser, its errors reported as configuration errors."""

from __future__ import annotations

from edgefleet.protocol import broker
from edgefleet.protocol.broker import BrokerAddress, BrokerUrlError
from fleet_server.errors import ConfigError

__all__ = ["BrokerAddress", "parse_mqtt_url"]


def parse_mqtt_url(url: str) -> BrokerAddress:
    try:
        return broker.parse_mqtt_url(url)
    except BrokerUrlError as exc:
        raise ConfigError(str(exc)) from exc
