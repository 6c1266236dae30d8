"""The p95 latency of many telemetry windows, from their latency histograms.

The agent's histogram bounds grow about 2x per bucket (``LATENCY_BOUNDS_MS`` in
``edge_agent/telemetry.py``), so the bucket holding the 95th percentile only says the p95 is
within a factor of about 2; a ratio of two such bounds moves in steps of 2x and a 1.6x
regression reads as 1.0x or 2.0x. Each window also reports its exact p50, p95 and max
(``LatencySummary``, from its own samples), which the buckets alone lose.

So each window becomes a cumulative distribution with knots where its count is known: every
bucket bound (the histogram's cumulative count), plus its p50, p95 and max (half, 95 % and all
of its count, kept inside the bucket that holds them). Between knots the count is linear in
log latency (values spread evenly in log space: what geometric buckets assume), except in the
first bucket ``[0, bounds[0]]`` where it is linear from 0 (log space has no 0; these latencies
are too small to matter to a ratio). The windows' distributions are summed (a sum of
functions linear in log latency between the union of their knots is again linear there, so
the merge is exact) and the quantile is read off the sum by the same interpolation.

Above the last bound a window's count reaches its total at its max; a window that does not
report its max puts its overflow at the last bound (an underestimate, as a bucket bound was).
A window without a p50/p95/max falls back to its buckets alone (log-linear inside them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_Knot = tuple[float, float]  # (latency, values at or below it)


@dataclass(frozen=True)
class LatencyWindow:
    """One window's latency histogram and the exact quantiles it reports."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # len(bounds) + 1: the last one is the overflow
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None

    @classmethod
    def from_payload(
        cls, histogram: Mapping[str, Any], latency: Mapping[str, Any]
    ) -> LatencyWindow:
        def number(key: str) -> float | None:
            value = latency.get(key)
            return None if value is None else float(value)

        return cls(
            bounds=tuple(float(b) for b in histogram["bounds"]),
            counts=tuple(int(c) for c in histogram["counts"]),
            p50_ms=number("p50_ms"),
            p95_ms=number("p95_ms"),
            max_ms=number("max_ms"),
        )

    @property
    def well_formed(self) -> bool:
        """Positive, increasing bounds and a count per bucket and the overflow (the protocol
        states but does not check this; a device could send anything)."""
        increasing = all(a < b for a, b in zip(self.bounds, self.bounds[1:], strict=False))
        return (
            bool(self.bounds)
            and self.bounds[0] > 0
            and increasing
            and len(self.counts) == len(self.bounds) + 1
            and min(self.counts) >= 0
        )

    def in_bucket(self, bucket: int) -> tuple[list[_Knot], float]:
        """This window's values in ``bucket``, as knots (latency, count at or below it
        within the bucket) from the bucket's lower bound to its upper one (the max for the
        overflow), through the reported quantiles inside it; and the count that sits on the
        lower bound itself (an overflow with no max above the last bound)."""
        lower = self.bounds[bucket - 1] if bucket else 0.0
        below = float(sum(self.counts[:bucket]))
        count = float(self.counts[bucket])
        upper = self.bounds[bucket] if bucket < len(self.bounds) else self.max_ms
        if count <= 0:
            return [], 0.0
        if upper is None or upper <= lower:
            return [], count
        total = float(sum(self.counts))
        knots: list[_Knot] = [(lower, 0.0)]
        for value, share in ((self.p50_ms, 0.5), (self.p95_ms, 0.95), (self.max_ms, 1.0)):
            if value is not None and lower < value < upper and value > knots[-1][0]:
                inside = min(max(share * total - below, knots[-1][1]), count)
                knots.append((value, inside))
        knots.append((upper, count))
        return knots, 0.0


def merged_quantile(q: float, windows: Sequence[LatencyWindow]) -> float | None:
    """The ``q`` quantile of all windows' latencies together (module docstring); None when
    they hold no values. The bucket holding it is exact (every window has a knot at every
    bound); inside it the windows' knots are swept in order, the sum being linear between
    them, so the cost grows as ``n log n`` in the number of windows."""
    windows = [w for w in windows if sum(w.counts) > 0]
    if not windows:
        return None
    per_bucket = [sum(counts) for counts in zip(*(w.counts for w in windows), strict=True)]
    rank = q * sum(per_bucket)
    seen, bucket = 0.0, len(per_bucket) - 1
    for index, count in enumerate(per_bucket):
        if count > 0 and seen + count >= rank:
            bucket = index
            break
        seen += count
    linear = bucket == 0  # no log space down to 0: linear from 0 in the first bucket
    lower = windows[0].bounds[bucket - 1] if bucket else 0.0
    # (position, change of slope, count added at the position), position = latency or log
    events: list[tuple[float, float, float]] = []
    for window in windows:
        knots, at_lower = window.in_bucket(bucket)
        seen += at_lower
        for (x0, c0), (x1, c1) in itertools.pairwise(knots):
            t0, t1 = _position(x0, linear), _position(x1, linear)
            if t1 > t0:
                slope = (c1 - c0) / (t1 - t0)
                events += [(t0, slope, 0.0), (t1, -slope, 0.0)]
            else:
                events.append((t0, 0.0, c1 - c0))
    position, slope, value = _position(lower, linear), 0.0, seen
    if value >= rank or not events:
        return lower
    for at, change, jump in sorted(events):
        reached = value + slope * (at - position)
        if slope > 0 and reached >= rank:
            return _latency(position + (rank - value) / slope, linear)
        position, value = at, reached + jump
        if value >= rank:
            return _latency(at, linear)
        slope += change
    return _latency(position, linear)


def _position(latency: float, linear: bool) -> float:
    """Where the sum is linear: latency in the first bucket, its log above it."""
    return latency if linear else math.log(latency)


def _latency(position: float, linear: bool) -> float:
    return position if linear else math.exp(position)
