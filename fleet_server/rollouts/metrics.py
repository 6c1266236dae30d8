"""What a wave measured, from device reports and telemetry windows.

- error rate: (errors + NaN outputs) / requests, over telemetry of the new version;
- p95 latency: merged latency histograms when devices send them (the upper bound of the bucket
  holding the 95th percentile), else the request-weighted mean of the windows' p95;
- the baseline for the latency ratio and drift is the same over telemetry of the *previous*
  version from the cohort's devices (during the rollout, and up to ``BASELINE_LOOKBACK_S``
  before it started);
- shadow agreement: comparison-weighted mean of ``top1_agreement`` of the candidate;
- drift: for every feature sketch (inputs and outputs, by index), the standardized mean shift
  ``|mean_new - mean_old| / max(std_old, eps)`` with the windows merged (Welford/Chan); the score
  is the largest shift over all features. Simple, cheap, documented; a PSI over histograms can
  replace it later without touching the gates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

BASELINE_LOOKBACK_S = 900.0
_EPS = 1e-3  # floor of the baseline std, so a constant feature does not divide by 0


@dataclass
class WaveMetrics:
    targeted: int = 0
    with_artifact: int = 0
    installed: int = 0
    failed: int = 0
    timed_out: int = 0
    requests: int = 0
    errors: int = 0
    nan_outputs: int = 0
    p95_ms: float | None = None
    baseline_p95_ms: float | None = None
    shadow_compared: int = 0
    shadow_agreement: float | None = None
    drift: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Moments:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def merge(self, count: int, mean: float, m2: float) -> None:
        if count <= 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 0.0


@dataclass
class WindowSummary:
    """Telemetry windows of one version, merged."""

    requests: int = 0
    errors: int = 0
    nan_outputs: int = 0
    p95_ms: float | None = None
    shadow_compared: int = 0
    shadow_agreement: float | None = None
    sketches: dict[str, _Moments] | None = None


def summarize(
    payloads: Iterable[dict[str, Any]], *, shadow_version: str | None = None
) -> WindowSummary:
    """Merge telemetry payloads (``Telemetry.model_dump(mode="json")``)."""
    out = WindowSummary()
    weighted_p95 = 0.0
    p95_weight = 0
    hist_bounds: tuple[float, ...] | None = None
    hist_counts: list[int] = []
    hist_ok = True
    agree_sum = 0.0
    sketches: dict[str, _Moments] = {}
    for payload in payloads:
        requests = int(payload.get("requests") or 0)
        out.requests += requests
        out.errors += int(payload.get("errors") or 0)
        out.nan_outputs += int(payload.get("nan_outputs") or 0)
        latency = payload.get("latency") or {}
        p95 = latency.get("p95_ms")
        count = int(latency.get("count") or requests)
        if p95 is not None and count > 0:
            weighted_p95 += float(p95) * count
            p95_weight += count
        histogram = payload.get("latency_histogram")
        if histogram is None:
            hist_ok = hist_ok and count == 0
        else:
            bounds = tuple(float(b) for b in histogram["bounds"])
            counts = [int(c) for c in histogram["counts"]]
            if hist_bounds is None:
                hist_bounds, hist_counts = bounds, counts
            elif bounds == hist_bounds:
                hist_counts = [a + b for a, b in zip(hist_counts, counts, strict=True)]
            else:
                hist_ok = False
        shadow = payload.get("shadow")
        if shadow and (shadow_version is None or shadow.get("version") == shadow_version):
            compared = int(shadow.get("compared") or 0)
            if shadow.get("top1_agreement") is not None and compared > 0:
                agree_sum += float(shadow["top1_agreement"]) * compared
                out.shadow_compared += compared
        for side in ("input_sketches", "output_sketches"):
            for sketch in payload.get(side) or ():
                key = f"{side[:-9]}[{sketch['index']}]"
                sketches.setdefault(key, _Moments()).merge(
                    int(sketch["count"]), float(sketch["mean"]), float(sketch["m2"])
                )
    if hist_ok and hist_bounds is not None and sum(hist_counts) > 0:
        out.p95_ms = _histogram_p95(hist_bounds, hist_counts)
    elif p95_weight:
        out.p95_ms = weighted_p95 / p95_weight
    if out.shadow_compared:
        out.shadow_agreement = agree_sum / out.shadow_compared
    out.sketches = sketches or None
    return out


def _histogram_p95(bounds: tuple[float, ...], counts: list[int]) -> float:
    target = 0.95 * sum(counts)
    seen = 0
    for bound, count in zip(bounds, counts, strict=False):
        seen += count
        if seen >= target:
            return bound
    return bounds[-1] if bounds else 0.0


def drift_score(new: WindowSummary, old: WindowSummary) -> float | None:
    """Largest standardized mean shift over the features both windows sketch."""
    if not new.sketches or not old.sketches:
        return None
    shifts = [
        abs(moments.mean - old.sketches[key].mean) / max(old.sketches[key].std, _EPS)
        for key, moments in new.sketches.items()
        if key in old.sketches and moments.count and old.sketches[key].count
    ]
    return max(shifts) if shifts else None
