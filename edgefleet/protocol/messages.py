"""Typed MQTT payloads shared by agent and server. JSON on the wire.

Frozen dataclasses read and written by :mod:`edgefleet.codec` (``decode``/``from_json`` in,
``to_bytes`` out); keys a message does not know are ignored, so either side may add fields.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgefleet.codec import Record, spec, to_json


class _Message(Record):
    def to_bytes(self) -> bytes:
        return to_json(self).encode()


def now() -> float:
    return time.time()


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, kw_only=True)
class Status(_Message):
    """Retained on ``status``; the Last Will publishes ``state=offline``."""

    state: DeviceState
    profile: str | None = None
    active_version: str | None = None
    agent_version: str | None = None
    ts: float = field(default_factory=now)


@dataclass(frozen=True, kw_only=True)
class HealthPolicy(_Message):
    """How a device judges a freshly activated model before committing it.

    The agent watches the new model for ``window_s`` seconds (and at least ``min_requests``
    requests when traffic allows) and rolls back by itself when a bound is crossed.
    """

    window_s: float = field(default=30.0, metadata=spec(ge=0))
    min_requests: int = field(default=0, metadata=spec(ge=0))
    max_error_rate: float = field(default=0.05, metadata=spec(ge=0, le=1))
    max_latency_ratio: float | None = field(
        default=3.0,
        metadata=spec(gt=0, description="p95 latency of new over old model; None = no bound."),
    )
    allow_nan: bool = False


@dataclass(frozen=True, kw_only=True)
class Artifact(_Message):
    """Where a device fetches one bundle and how it checks the download."""

    model: str
    version: str
    artifact_url: str = field(
        metadata=spec(description="Path on the fleet server, e.g. /api/v1/artifacts/3")
    )
    sha256: str = field(metadata=spec(description="sha256 of the bundle tar"))
    size: int = field(metadata=spec(ge=0))


@dataclass(frozen=True, kw_only=True)
class ShadowSpec(_Message):
    """A candidate model to run beside the active one, on a sampled share of requests."""

    artifact: Artifact
    sample_rate: float = field(default=1.0, metadata=spec(gt=0, le=1))


@dataclass(frozen=True, kw_only=True)
class DesiredState(_Message):
    """Retained on ``desired``: the model a device should run (and, optionally, shadow)."""

    deployment_id: str
    model: str
    version: str
    artifact_url: str = field(
        metadata=spec(description="Path on the fleet server, e.g. /api/v1/artifacts/3")
    )
    sha256: str = field(metadata=spec(description="sha256 of the bundle tar"))
    size: int = field(metadata=spec(ge=0))
    rollback: bool = field(
        default=False,
        metadata=spec(description="An explicit rollback: installing an older version is allowed."),
    )
    health: HealthPolicy = field(default_factory=HealthPolicy)
    shadow: ShadowSpec | None = None
    ts: float = field(default_factory=now)


class DeploymentPhase(StrEnum):
    """Phases a device reports for a deployment, in order. Terminal: committed, rolled_back,
    failed. ``active`` (kept for the skeleton) means activated and serving, validation pending.
    """

    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGING = "staging"
    ACTIVATING = "activating"
    ACTIVE = "active"
    VALIDATING = "validating"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class Report(_Message):
    """Deployment progress, from device to server.

    ``active_model``/``active_version`` say what the device serves after this transition:
    the server shows that, and only that, as the device's running version.
    """

    deployment_id: str
    model: str
    version: str
    phase: DeploymentPhase
    detail: str = ""
    active_model: str | None = None
    active_version: str | None = None
    ts: float = field(default_factory=now)


@dataclass(frozen=True, kw_only=True)
class LatencySummary(_Message):
    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class Histogram(_Message):
    """Counts per bucket: ``counts[i]`` counts values <= ``bounds[i]``; the last count is the
    overflow above the last bound (so ``len(counts) == len(bounds) + 1``)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class FeatureSketch(_Message):
    """A mergeable summary of one feature (input) or output over a telemetry window."""

    index: int = field(
        metadata=spec(ge=0, description="Flat position in the example (or output vector).")
    )
    input_name: str | None = field(
        default=None,
        metadata=spec(
            description="The model input this feature is in, for a model with several inputs "
            "(index is then the flat position within that input)."
        ),
    )
    count: int = field(metadata=spec(ge=0))
    mean: float
    m2: float = field(
        metadata=spec(ge=0, description="Sum of squared deviations (Welford), for the variance.")
    )
    min: float
    max: float
    histogram: Histogram | None = None


@dataclass(frozen=True, kw_only=True)
class ShadowStats(_Message):
    """How a shadow candidate compared with the active model over a window."""

    model: str
    version: str
    compared: int = field(metadata=spec(ge=0))
    top1_agreement: float | None = None
    mean_abs_diff: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    errors: int = 0


@dataclass(frozen=True, kw_only=True)
class Telemetry(_Message):
    window_s: float
    requests: int
    errors: int
    latency: LatencySummary
    outbox_depth: int
    outbox_dropped: int = 0
    active_model: str | None = None
    active_version: str | None = None
    cpu_percent: float | None = None
    memory_rss_bytes: int | None = None
    disk_free_bytes: int | None = None
    latency_histogram: Histogram | None = None
    nan_outputs: int = 0
    shadow: ShadowStats | None = None
    input_sketches: tuple[FeatureSketch, ...] = ()
    output_sketches: tuple[FeatureSketch, ...] = ()
    ts: float = field(default_factory=now)


@dataclass(frozen=True, kw_only=True)
class PredictionRecord(_Message):
    seq: int = field(
        metadata=spec(ge=1, description="Per-device sequence number, gap-free, from 1.")
    )
    record_id: str
    model: str
    model_version: str
    artifact_sha256: str
    input_digest: str
    input: Any | None = field(
        default=None, metadata=spec(description="The input itself, for sampled records.")
    )
    output: Any
    latency_ms: float
    ts: float


@dataclass(frozen=True, kw_only=True)
class PredictionBatch(_Message):
    records: tuple[PredictionRecord, ...] = field(metadata=spec(min_length=1))


@dataclass(frozen=True, kw_only=True)
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
