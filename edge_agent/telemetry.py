"""Request metrics and the periodic telemetry message.

:class:`Metrics` counts requests, errors and latencies per window; :class:`TelemetryLoop`
publishes one :class:`~edgefleet.protocol.messages.Telemetry` every interval while connected.
While disconnected the window keeps growing, so the first message after a reconnect covers
the whole outage.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from edgefleet.protocol.messages import LatencySummary, Telemetry

log = logging.getLogger(__name__)

MAX_SAMPLES = 10_000


@dataclass
class _Window:
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class Metrics:
    """Thread-safe counters for one telemetry window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window = _Window()
        self.total_requests = 0
        self.total_errors = 0

    def record_request(self, latency_ms: float, count: int = 1) -> None:
        with self._lock:
            self._window.requests += count
            self.total_requests += count
            if len(self._window.latencies_ms) < MAX_SAMPLES:
                self._window.latencies_ms.append(latency_ms)

    def record_error(self) -> None:
        with self._lock:
            self._window.errors += 1
            self.total_errors += 1

    def take(self) -> tuple[float, int, int, LatencySummary]:
        """Close the window: (seconds, requests, errors, latency summary); start a new one."""
        with self._lock:
            window, self._window = self._window, _Window()
        latencies = np.asarray(window.latencies_ms, dtype=np.float64)
        summary = LatencySummary(count=int(latencies.size))
        if latencies.size:
            summary = LatencySummary(
                count=int(latencies.size),
                p50_ms=float(np.percentile(latencies, 50)),
                p95_ms=float(np.percentile(latencies, 95)),
                max_ms=float(latencies.max()),
            )
        return time.monotonic() - window.started, window.requests, window.errors, summary

    def restore(self, seconds: float, requests: int, errors: int) -> None:
        """Fold a window that could not be sent back into the current one."""
        with self._lock:
            self._window.started -= seconds
            self._window.requests += requests
            self._window.errors += errors


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
    ) -> None:
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
        seconds, requests, errors, latency = self._metrics.take()
        active = self._active()
        return Telemetry(
            window_s=round(seconds, 3),
            requests=requests,
            errors=errors,
            latency=latency,
            outbox_depth=self._outbox_depth(),
            active_model=active.model,
            active_version=active.version,
            memory_rss_bytes=int(self._process.memory_info().rss),
            disk_free_bytes=int(shutil.disk_usage(self._data_dir).free),
        )

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._connected():
                continue
            message = self.build()
            if not self._publish(message):
                self._metrics.restore(message.window_s, message.requests, message.errors)
