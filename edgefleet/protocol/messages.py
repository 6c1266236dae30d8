"""Typed MQTT payloads shared by agent and server. JSON on the wire."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def now() -> float:
    return time.time()


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Status(_Message):
    """Retained on ``status``; the Last Will publishes ``state=offline``."""

    state: DeviceState
    profile: str | None = None
    active_version: str | None = None
    agent_version: str | None = None
    ts: float = Field(default_factory=now)


class DesiredState(_Message):
    """Retained on ``desired``: the model a device should run."""

    deployment_id: str
    model: str
    version: str
    artifact_url: str = Field(description="Path on the fleet server, e.g. /api/v1/artifacts/3")
    sha256: str = Field(description="sha256 of the bundle tar")
    size: int = Field(ge=0)
    ts: float = Field(default_factory=now)


class DeploymentPhase(StrEnum):
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGING = "staging"
    ACTIVE = "active"
    FAILED = "failed"


class Report(_Message):
    """Deployment progress, from device to server."""

    deployment_id: str
    model: str
    version: str
    phase: DeploymentPhase
    detail: str = ""
    ts: float = Field(default_factory=now)


class LatencySummary(_Message):
    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None


class Telemetry(_Message):
    window_s: float
    requests: int
    errors: int
    latency: LatencySummary
    outbox_depth: int
    active_model: str | None = None
    active_version: str | None = None
    memory_rss_bytes: int | None = None
    disk_free_bytes: int | None = None
    ts: float = Field(default_factory=now)


class PredictionRecord(_Message):
    seq: int = Field(ge=1, description="Per-device sequence number, gap-free, from 1.")
    record_id: str
    model: str
    model_version: str
    artifact_sha256: str
    input_digest: str
    input: Any | None = Field(default=None, description="The input itself, for sampled records.")
    output: Any
    latency_ms: float
    ts: float


class PredictionBatch(_Message):
    records: tuple[PredictionRecord, ...] = Field(min_length=1)


class Ack(_Message):
    """Sequence numbers the server has stored durably, as inclusive ``(first, last)`` ranges.

    The agent deletes exactly these records from its outbox; anything not acknowledged is
    sent again after a timeout, and the server stores it idempotently by ``(device, seq)``.
    """

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, seqs: Iterable[int]) -> Ack:
        ranges: list[tuple[int, int]] = []
        for seq in sorted(set(seqs)):
            if ranges and ranges[-1][1] == seq - 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        return cls(ranges=tuple(ranges))

    def seqs(self) -> Iterator[int]:
        for first, last in self.ranges:
            yield from range(first, last + 1)
