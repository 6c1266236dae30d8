"""Request metrics and the periodic telemetry message.

:class:`Metrics` counts requests, errors, NaN outputs and latencies (percentiles and a
fixed-bound histogram) per window, and keeps per-feature sketches of inputs and outputs for
drift monitoring (see :mod:`edge_agent.sketches`); :class:`TelemetryLoop`
publishes one :class:`~edgefleet.protocol.messages.Telemetry` every interval while connected.
While disconnected the window keeps growing, so the first message after a reconnect covers
the whole outage.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from edge_agent.runtime.base import Array
from edge_agent.sketches import InputSketches, SketchSet
from edgefleet.protocol.messages import (
    FeatureSketch,
    Histogram,
    LatencySummary,
    ShadowStats,
    Telemetry,
)

log = logging.getLogger(__name__)

MAX_SAMPLES = 10_000
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
)  # fmt: skip


@dataclass
class _Window:
    sketch_features: int
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    errors: int = 0
    nan_outputs: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    histogram: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    inputs: InputSketches = field(init=False)
    outputs: SketchSet = field(init=False)

    def __post_init__(self) -> None:
        self.inputs = InputSketches(self.sketch_features)
        self.outputs = SketchSet(self.sketch_features)


@dataclass(frozen=True)
class WindowSummary:
    seconds: float
    requests: int
    errors: int
    nan_outputs: int
    latency: LatencySummary
    histogram: Histogram
    input_sketches: tuple[FeatureSketch, ...]
    output_sketches: tuple[FeatureSketch, ...]


@dataclass(frozen=True)
class Totals:
    """Cumulative since start: examples predicted, failed requests, runs (one per request,
    one histogram count each), their summed latency and per-bucket counts (not cumulative)."""

    examples: int
    errors: int
    calls: int
    latency_ms_sum: float
    histogram: tuple[int, ...]


class Metrics:
    """Thread-safe counters, latency histogram and feature sketches for one window."""

    def __init__(self, *, sketch_features: int = 32) -> None:
        self._lock = threading.Lock()
        self._features = sketch_features
        self._window = _Window(sketch_features)
        self.total_requests = 0
        self.total_errors = 0
        self.total_calls = 0
        self.total_latency_ms = 0.0
        self.total_histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)

    def record_request(self, latency_ms: float, count: int = 1, nan: int = 0) -> None:
        bucket = bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)
        with self._lock:
            window = self._window
            window.requests += count
            window.nan_outputs += nan
            window.histogram[bucket] += 1
            self.total_requests += count
            self.total_calls += 1
            self.total_latency_ms += latency_ms
            self.total_histogram[bucket] += 1
            if len(window.latencies_ms) < MAX_SAMPLES:
                window.latencies_ms.append(latency_ms)

    def record_calls(
        self,
        calls: Sequence[tuple[float, int, int]],
        inputs: Sequence[Array | Mapping[str, Array]] = (),
        outputs: Sequence[Array] = (),
    ) -> None:
        """Several :meth:`record_request` (``(latency_ms, examples, nan)`` each) and one
        :meth:`observe_examples`, under one lock: what the recorder does per batch."""
        buckets = [bisect.bisect_left(LATENCY_BOUNDS_MS, call[0]) for call in calls]
        with self._lock:
            window = self._window
            latencies = window.latencies_ms
            for (latency_ms, count, nan), bucket in zip(calls, buckets, strict=True):
                window.requests += count
                window.nan_outputs += nan
                window.histogram[bucket] += 1
                self.total_requests += count
                self.total_latency_ms += latency_ms
                self.total_histogram[bucket] += 1
                if len(latencies) < MAX_SAMPLES:
                    latencies.append(latency_ms)
            self.total_calls += len(calls)
            window.inputs.add_examples(inputs)
            window.outputs.add_examples(outputs)

    def record_error(self) -> None:
        with self._lock:
            self._window.errors += 1
            self.total_errors += 1

    def observe(self, inputs: Array, outputs: Array) -> None:
        """Add examples (first axis) and their first output to the window's sketches."""
        with self._lock:
            self._window.inputs.add(inputs)
            self._window.outputs.add(outputs)

    def observe_examples(
        self, inputs: Sequence[Array | Mapping[str, Array]], outputs: Sequence[Array]
    ) -> None:
        """Like :meth:`observe`, for lists of per-example arrays (no stacking)."""
        with self._lock:
            self._window.inputs.add_examples(inputs)
            self._window.outputs.add_examples(outputs)

    def totals(self) -> Totals:
        """Cumulative counts since start (never reset; what ``/metrics`` exposes)."""
        with self._lock:
            return Totals(
                examples=self.total_requests,
                errors=self.total_errors,
                calls=self.total_calls,
                latency_ms_sum=self.total_latency_ms,
                histogram=tuple(self.total_histogram),
            )

    def take(self) -> WindowSummary:
        """Close the window and start a new one."""
        with self._lock:
            window, self._window = self._window, _Window(self._features)
            input_sketches = window.inputs.sketches()
            output_sketches = window.outputs.sketches()
        latencies = np.asarray(window.latencies_ms, dtype=np.float64)
        summary = LatencySummary(count=int(latencies.size))
        if latencies.size:
            summary = LatencySummary(
                count=int(latencies.size),
                p50_ms=float(np.percentile(latencies, 50)),
                p95_ms=float(np.percentile(latencies, 95)),
                max_ms=float(latencies.max()),
            )
        return WindowSummary(
            seconds=time.monotonic() - window.started,
            requests=window.requests,
            errors=window.errors,
            nan_outputs=window.nan_outputs,
            latency=summary,
            histogram=Histogram(bounds=LATENCY_BOUNDS_MS, counts=tuple(window.histogram)),
            input_sketches=input_sketches,
            output_sketches=output_sketches,
        )

    def restore(self, summary: WindowSummary) -> None:
        """Fold a window that could not be sent back into the current one (counts only)."""
        with self._lock:
            window = self._window
            window.started -= summary.seconds
            window.requests += summary.requests
            window.errors += summary.errors
            window.nan_outputs += summary.nan_outputs
            for index, count in enumerate(summary.histogram.counts):
                window.histogram[index] += count


@dataclass(frozen=True)
class ActiveInfo:
    model: str | None
    version: str | None


class TelemetryLoop:
    """Every ``interval`` seconds, build a Telemetry message and hand it to ``publish``."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        interval: float,
        data_dir: Path,
        outbox_depth: Callable[[], int],
        active: Callable[[], ActiveInfo],
        connected: Callable[[], bool],
        publish: Callable[[Telemetry], bool],
        outbox_dropped: Callable[[], int] = lambda: 0,
        shadow: Callable[[], ShadowStats | None] = lambda: None,
    ) -> None:
        self._outbox_dropped = outbox_dropped
        self._dropped_sent = 0
        self._shadow = shadow
        self._metrics = metrics
        self._interval = interval
        self._data_dir = data_dir
        self._outbox_depth = outbox_depth
        self._active = active
        self._connected = connected
        self._publish = publish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgefleet-telemetry", daemon=True)
        self._process = psutil.Process()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def build(self) -> Telemetry:
        window = self._metrics.take()
        active = self._active()
        return Telemetry(
            window_s=round(window.seconds, 3),
            requests=window.requests,
            errors=window.errors,
            latency=window.latency,
            latency_histogram=window.histogram,
            nan_outputs=window.nan_outputs,
            outbox_depth=self._outbox_depth(),
            outbox_dropped=max(0, self._outbox_dropped() - self._dropped_sent),
            active_model=active.model,
            active_version=active.version,
            cpu_percent=float(self._process.cpu_percent(None)),
            memory_rss_bytes=int(self._process.memory_info().rss),
            disk_free_bytes=int(shutil.disk_usage(self._data_dir).free),
            shadow=self._shadow(),
            input_sketches=window.input_sketches,
            output_sketches=window.output_sketches,
        )

    def _loop(self) -> None:
        self._process.cpu_percent(None)  # the first call only starts the measurement
        while not self._stop.wait(self._interval):
            if not self._connected():
                continue
            message = self.build()
            if self._publish(message):
                self._dropped_sent += message.outbox_dropped
            else:
                self._metrics.restore(_summary_of(message))


def _summary_of(message: Telemetry) -> WindowSummary:
    histogram = message.latency_histogram or Histogram(
        bounds=LATENCY_BOUNDS_MS, counts=(0,) * (len(LATENCY_BOUNDS_MS) + 1)
    )
    return WindowSummary(
        seconds=message.window_s,
        requests=message.requests,
        errors=message.errors,
        nan_outputs=message.nan_outputs,
        latency=message.latency,
        histogram=histogram,
        input_sketches=(),
        output_sketches=(),
    )
