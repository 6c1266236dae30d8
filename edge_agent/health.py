"""Per-model health counters, fed by the serving path and read by the update validator.

Keyed by the artifact's sha256, so the model served before an update keeps its recent
latencies as the baseline while the new model's window is judged.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RECENT = 512


@dataclass(frozen=True)
class HealthSnapshot:
    requests: int
    errors: int
    nan_outputs: int
    latency_samples: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class _Stats:
    requests: int = 0
    errors: int = 0
    nan_outputs: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))


class HealthMonitor:
    """Thread-safe; ``record`` costs one lock and a deque append."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, _Stats] = {}

    def record(
        self, key: str, latency_ms: float | None, *, error: bool = False, nan: int = 0
    ) -> None:
        with self._lock:
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = _Stats()
            stats.requests += 1
            stats.errors += int(error)
            stats.nan_outputs += nan
            if latency_ms is not None:
                stats.latencies.append(latency_ms)

    def record_calls(self, key: str, calls: Sequence[tuple[float, int, int]]) -> None:
        """Several successful requests ``(latency_ms, examples, nan)``, under one lock."""
        with self._lock:
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = _Stats()
            stats.requests += len(calls)
            stats.nan_outputs += sum(call[2] for call in calls)
            stats.latencies.extend(call[0] for call in calls)

    def reset(self, key: str) -> None:
        with self._lock:
            self._stats[key] = _Stats()

    def snapshot(self, key: str) -> HealthSnapshot:
        with self._lock:
            stats = self._stats.get(key) or _Stats()
            latencies = np.asarray(stats.latencies, dtype=np.float64)
            counts = (stats.requests, stats.errors, stats.nan_outputs)
        p95 = float(np.percentile(latencies, 95)) if latencies.size else None
        return HealthSnapshot(*counts, latency_samples=int(latencies.size), p95_ms=p95)
