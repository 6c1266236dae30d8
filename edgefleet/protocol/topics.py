"""Every MQTT topic Edgefleet uses, built and parsed in one place.

::

    edgefleet/v1/{device}/status       retained; Last Will = offline      device -> server
    edgefleet/v1/{device}/desired      retained desired state             server -> device
    edgefleet/v1/{device}/report       deployment progress reports        device -> server
    edgefleet/v1/{device}/telemetry    metrics                            device -> server
    edgefleet/v1/{device}/predictions  outbox batches with (device, seq)  device -> server
    edgefleet/v1/{device}/ack          highest seq stored by the server   server -> device
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

BASE = "edgefleet/v1"
SHARE_GROUP = "fleet"
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Channel(StrEnum):
    STATUS = "status"
    DESIRED = "desired"
    REPORT = "report"
    TELEMETRY = "telemetry"
    PREDICTIONS = "predictions"
    ACK = "ack"


DEVICE_TO_SERVER = (Channel.STATUS, Channel.REPORT, Channel.TELEMETRY, Channel.PREDICTIONS)
SERVER_TO_DEVICE = (Channel.DESIRED, Channel.ACK)


class TopicError(ValueError):
    """A topic or device id that does not fit the scheme."""


@dataclass(frozen=True)
class Topic:
    device_id: str
    channel: Channel

    def __str__(self) -> str:
        return f"{BASE}/{self.device_id}/{self.channel.value}"


def validate_device_id(device_id: str) -> str:
    if not DEVICE_ID_PATTERN.match(device_id):
        raise TopicError(
            f"device id {device_id!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return device_id


def topic(device_id: str, channel: Channel) -> str:
    return str(Topic(validate_device_id(device_id), channel))


def parse(name: str) -> Topic:
    parts = name.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != BASE:
        raise TopicError(f"topic {name!r} is not under {BASE}/<device>/<channel>")
    try:
        channel = Channel(parts[3])
    except ValueError:
        raise TopicError(f"topic {name!r} has an unknown channel {parts[3]!r}") from None
    return Topic(validate_device_id(parts[2]), channel)


def subscription(channel: Channel, *, shared: bool = False) -> str:
    """Wildcard filter for one channel of every device; ``shared`` splits load across servers."""
    pattern = f"{BASE}/+/{channel.value}"
    return f"$share/{SHARE_GROUP}/{pattern}" if shared else pattern
