"""What a wave measured, from device reports and telemetry windows.

- error rate: (errors + NaN outputs) / requests, over telemetry of the new version;
- p95 latency: from the windows' latency histograms and reported quantiles when devices send
  histograms (all with the same bounds), interpolated inside buckets (see
  :mod:`fleet_server.rollouts.latency`), else the request-weighted mean of the windows' p95;
- the baseline for the latency ratio and drift is the same over telemetry of the *previous*
  version from the cohort's devices (during the rollout, and up to ``BASELINE_LOOKBACK_S``
  before it started);
- shadow agreement: comparison-weighted mean of ``top1_agreement`` of the candidate;
- drift: the population stability index (PSI) of every feature sketch (inputs and outputs, by
  index) of the new version's windows against the previous version's, merged over the windows;
  the score is the largest PSI over all features (see :func:`psi` and :func:`feature_psi`).

PSI binning: two standard binnings, and the larger PSI of the two counts.

1. Deciles: each window is taken as a normal distribution with its merged mean and standard
   deviation (what every sketch carries), and the bins are the 10 deciles of the previous
   version's distribution (equal expected mass, the usual PSI binning). Scale-free: it sees a
   shift of location or spread of any feature, however the feature is scaled.
2. Buckets: when both windows carry histograms with the same bounds (the agent sends them:
   ``edge_agent/sketches.py``, default bounds -10, -3, -1, -0.3, 0, 0.3, 1, 3, 10, so 10
   buckets, two open-ended), the bins are those buckets with the windows' counts summed. It
   sees changes of shape the moments miss (a second mode, a heavier tail), but not a shift
   inside one wide bucket (outputs in [0, 1] move within (0.3, 1]), hence 1.

Proportions are floored at ``PSI_FLOOR`` so an empty bin does not make the index infinite.
Rule of thumb: below 0.1 no shift, 0.1-0.25 a moderate shift, above 0.25 a major one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from fleet_server.rollouts.latency import LatencyWindow, merged_quantile

BASELINE_LOOKBACK_S = 900.0
PSI_FLOOR = 1e-4  # smallest proportion of a bin in the PSI sum
PSI_QUANTILE_BINS = 10  # bins of the normal approximation: deciles of the baseline
_EPS = 1e-6  # floor of a standard deviation, so a constant feature is a narrow normal


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
class FeatureWindow:
    """One feature's sketches over many windows, merged: moments (Chan) and histogram."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    bounds: tuple[float, ...] | None = None
    counts: list[int] | None = None
    histogram_ok: bool = True  # every merged sketch had a histogram with the same bounds

    def merge(self, sketch: dict[str, Any]) -> None:
        count = int(sketch["count"])
        if count <= 0:
            return
        mean, m2 = float(sketch["mean"]), float(sketch["m2"])
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total
        histogram = sketch.get("histogram")
        if histogram is None:
            self.histogram_ok = False
            return
        bounds = tuple(float(b) for b in histogram["bounds"])
        counts = [int(c) for c in histogram["counts"]]
        if self.counts is None and self.histogram_ok:
            self.bounds, self.counts = bounds, counts
        elif bounds == self.bounds and self.counts is not None:
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        else:
            self.histogram_ok = False

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 0.0

    @property
    def histogram(self) -> tuple[tuple[float, ...], list[int]] | None:
        if not self.histogram_ok or self.bounds is None or not self.counts or not sum(self.counts):
            return None
        return self.bounds, self.counts

    def normal(self) -> NormalDist:
        return NormalDist(self.mean, max(self.std, _EPS))


@dataclass
class WindowSummary:
    """Telemetry windows of one version, merged."""

    requests: int = 0
    errors: int = 0
    nan_outputs: int = 0
    p95_ms: float | None = None
    shadow_compared: int = 0
    shadow_agreement: float | None = None
    sketches: dict[str, FeatureWindow] | None = None


def summarize(
    payloads: Iterable[dict[str, Any]], *, shadow_version: str | None = None
) -> WindowSummary:
    """Merge telemetry payloads (``codec.encode(telemetry)``)."""
    out = WindowSummary()
    weighted_p95 = 0.0
    p95_weight = 0
    latency_windows: list[LatencyWindow] = []
    hist_ok = True
    agree_sum = 0.0
    sketches: dict[str, FeatureWindow] = {}
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
            window = LatencyWindow.from_payload(histogram, latency)
            if not window.well_formed or (
                latency_windows and window.bounds != latency_windows[0].bounds
            ):
                hist_ok = False
            latency_windows.append(window)
        shadow = payload.get("shadow")
        if shadow and (shadow_version is None or shadow.get("version") == shadow_version):
            compared = int(shadow.get("compared") or 0)
            if shadow.get("top1_agreement") is not None and compared > 0:
                agree_sum += float(shadow["top1_agreement"]) * compared
                out.shadow_compared += compared
        for side in ("input_sketches", "output_sketches"):
            for sketch in payload.get(side) or ():
                named = f".{sketch['input_name']}" if sketch.get("input_name") else ""
                key = f"{side[:-9]}{named}[{sketch['index']}]"
                sketches.setdefault(key, FeatureWindow()).merge(sketch)
    histogram_p95 = merged_quantile(0.95, latency_windows) if hist_ok else None
    if histogram_p95 is not None:
        out.p95_ms = histogram_p95
    elif p95_weight:
        out.p95_ms = weighted_p95 / p95_weight
    if out.shadow_compared:
        out.shadow_agreement = agree_sum / out.shadow_compared
    out.sketches = sketches or None
    return out


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins (counts or
    proportions): ``sum((a - e) * ln(a / e))`` over the bins' proportions, each floored at
    ``PSI_FLOOR``."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs the same bins: {len(expected)} vs {len(actual)}")
    e_total, a_total = sum(expected), sum(actual)
    if e_total <= 0 or a_total <= 0:
        raise ValueError("PSI needs a non-empty distribution on both sides")
    total = 0.0
    for e_count, a_count in zip(expected, actual, strict=True):
        e = max(e_count / e_total, PSI_FLOOR)
        a = max(a_count / a_total, PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def feature_psi(new: FeatureWindow, old: FeatureWindow) -> float:
    """PSI of one feature: the larger of its decile and bucket PSIs (module docstring)."""
    old_dist, new_dist = old.normal(), new.normal()
    cuts = [old_dist.inv_cdf(i / PSI_QUANTILE_BINS) for i in range(1, PSI_QUANTILE_BINS)]
    cdf = [0.0, *(new_dist.cdf(cut) for cut in cuts), 1.0]
    deciles = psi([1.0] * PSI_QUANTILE_BINS, [hi - lo for lo, hi in itertools.pairwise(cdf)])
    new_hist, old_hist = new.histogram, old.histogram
    if new_hist is None or old_hist is None or new_hist[0] != old_hist[0]:
        return deciles
    return max(deciles, psi(old_hist[1], new_hist[1]))


def drift_by_feature(new: WindowSummary, old: WindowSummary) -> dict[str, float]:
    """PSI of every feature both windows sketch (``input[i]``, ``input.NAME[i]`` for a model
    with several inputs, ``output[i]``)."""
    if not new.sketches or not old.sketches:
        return {}
    return {
        key: feature_psi(window, old.sketches[key])
        for key, window in sorted(new.sketches.items())
        if key in old.sketches and window.count and old.sketches[key].count
    }


def drift_score(new: WindowSummary, old: WindowSummary) -> float | None:
    """The largest PSI over the features both windows sketch; None when there are none."""
    scores = drift_by_feature(new, old)
    return max(scores.values()) if scores else None
