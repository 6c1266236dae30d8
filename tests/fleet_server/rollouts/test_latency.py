"""p95 latency of telemetry windows: histograms built by the agent's own ``Metrics`` against
numpy's percentile of the raw latencies, and the latency gate on top of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from edge_agent.telemetry import LATENCY_BOUNDS_MS, Metrics
from edgefleet.codec import encode
from fleet_server.rollouts.latency import LatencyWindow, merged_quantile
from fleet_server.rollouts.metrics import WaveMetrics, summarize
from fleet_server.rollouts.strategy import MaxLatencyRatio

Sampler = Callable[[np.random.Generator, int], np.ndarray]

DISTRIBUTIONS: dict[str, Sampler] = {
    "lognormal 3 ms": lambda rng, n: rng.lognormal(np.log(3.0), 0.5, n),
    "lognormal 40 ms, wide": lambda rng, n: rng.lognormal(np.log(40.0), 1.0, n),
    "gamma": lambda rng, n: rng.gamma(2.0, 6.0, n),
    "exponential": lambda rng, n: rng.exponential(20.0, n),
    "uniform": lambda rng, n: rng.uniform(5.0, 60.0, n),
    "narrow normal": lambda rng, n: np.abs(rng.normal(300.0, 40.0, n)),
    "bimodal": lambda rng, n: np.where(
        rng.random(n) < 0.9, rng.lognormal(np.log(2.0), 0.3, n), rng.lognormal(np.log(30.0), 0.3, n)
    ),
    "above the last bound": lambda rng, n: rng.lognormal(np.log(1500.0), 0.6, n),
}


def agent_windows(parts: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """One telemetry payload per part, as a device's ``Metrics`` would report it."""
    payloads = []
    for part in parts:
        metrics = Metrics()
        for latency in part:
            metrics.record_request(float(latency))
        window = metrics.take()
        payloads.append(
            {
                "requests": window.requests,
                "latency": encode(window.latency),
                "latency_histogram": encode(window.histogram),
            }
        )
    return payloads


def bucket_bound_p95(payloads: Sequence[dict[str, Any]]) -> float:
    """The upper bound of the bucket holding the p95 (what the server used to report)."""
    counts = np.sum([p["latency_histogram"]["counts"] for p in payloads], axis=0)
    index = int(np.searchsorted(np.cumsum(counts), 0.95 * counts.sum()))
    return LATENCY_BOUNDS_MS[min(index, len(LATENCY_BOUNDS_MS) - 1)]


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("scale", [1.0, 1.3, 1.6, 2.1])
def test_p95_of_agent_histograms_is_within_15_percent_of_the_raw_percentile(
    name: str, scale: float
) -> None:
    rng = np.random.default_rng(7)
    latencies = DISTRIBUTIONS[name](rng, 4000) * scale
    payloads = agent_windows(np.array_split(latencies, 4))
    true = float(np.percentile(latencies, 95))
    p95 = summarize(payloads).p95_ms
    assert p95 == pytest.approx(true, rel=0.15), (name, scale, p95, true)


def test_the_bucket_bound_was_off_by_far_more_on_the_same_data() -> None:
    """What the test above guards against: the bucket bound is off by up to 2x here."""
    rng = np.random.default_rng(7)
    errors = []
    for sampler in DISTRIBUTIONS.values():
        latencies = sampler(rng, 4000) * 1.6
        true = float(np.percentile(latencies, 95))
        errors.append(abs(bucket_bound_p95(agent_windows([latencies])) / true - 1))
    assert max(errors) > 0.5


@pytest.mark.parametrize(
    ("fast_ms", "slow_ms", "slow_share"),
    [(5.0, 20.0, 0.1), (5.0, 40.0, 0.06), (10.0, 15.0, 0.5), (3.0, 100.0, 0.2), (2.0, 8.0, 0.05)],
)
def test_p95_of_devices_with_different_latencies_is_the_p95_of_all_requests(
    fast_ms: float, slow_ms: float, slow_share: float
) -> None:
    """Three fast devices and a slow one: the windows' own p95s differ, the merge is still
    the percentile of every request together (not a mean of the windows' p95)."""
    rng = np.random.default_rng(3)
    slow = int(4000 * slow_share)
    parts = [rng.lognormal(np.log(fast_ms), 0.4, (4000 - slow) // 3) for _ in range(3)]
    parts.append(rng.lognormal(np.log(slow_ms), 0.4, slow))
    true = float(np.percentile(np.concatenate(parts), 95))
    assert summarize(agent_windows(parts)).p95_ms == pytest.approx(true, rel=0.15)


def gate_on(new: np.ndarray, old: np.ndarray, max_ratio: float) -> tuple[bool, float]:
    metrics = WaveMetrics(
        p95_ms=summarize(agent_windows(np.array_split(new, 3))).p95_ms,
        baseline_p95_ms=summarize(agent_windows(np.array_split(old, 5))).p95_ms,
    )
    result = MaxLatencyRatio(max=max_ratio).check(metrics)
    assert result.value is not None
    return result.ok, result.value


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_a_wave_one_and_a_half_times_slower_fails_a_ratio_gate_of_1_3(name: str) -> None:
    """Each ratio is within 10 % of the ratio of the raw samples' p95 (the samples' own noise
    is a few percent), so 1.5x fails the gate and an equal wave passes it."""
    rng = np.random.default_rng(11)
    sampler = DISTRIBUTIONS[name]
    baseline = sampler(rng, 3000)
    for new, slower in ((sampler(rng, 2000) * 1.5, True), (sampler(rng, 2000), False)):
        ok, ratio = gate_on(new, baseline, 1.3)
        raw = float(np.percentile(new, 95) / np.percentile(baseline, 95))
        assert ratio == pytest.approx(raw, rel=0.1), (ratio, raw)
        assert ok is not slower, (ratio, raw)


def test_histogram_alone_interpolates_in_log_space_inside_the_bucket() -> None:
    """Without reported quantiles: 95 of 100 values is 5 of the 8 in (2, 5], so 5/8 of the
    way from 2 to 5 in log space."""
    window = LatencyWindow(bounds=(1.0, 2.0, 5.0), counts=(50, 40, 8, 2))
    assert merged_quantile(0.95, [window]) == pytest.approx(2.0 * 2.5 ** (5 / 8))
    first = LatencyWindow(bounds=(1.0, 2.0, 5.0), counts=(100, 0, 0, 0))
    assert merged_quantile(0.95, [first]) == pytest.approx(0.95)  # linear from 0


def test_overflow_reaches_the_reported_max_or_stops_at_the_last_bound() -> None:
    no_max = LatencyWindow(bounds=(1.0, 2.0, 5.0), counts=(0, 0, 0, 10))
    assert merged_quantile(0.95, [no_max]) == 5.0
    with_max = LatencyWindow(bounds=(1.0, 2.0, 5.0), counts=(0, 0, 0, 10), max_ms=20.0)
    assert merged_quantile(0.95, [with_max]) == pytest.approx(5.0 * 4.0**0.95)


def test_a_reported_p95_is_a_knot_of_its_windows_distribution() -> None:
    window = LatencyWindow(bounds=(1.0, 2.0, 5.0), counts=(50, 40, 8, 2), p95_ms=3.1)
    assert merged_quantile(0.95, [window]) == pytest.approx(3.1)
    assert merged_quantile(0.95, [window, window]) == pytest.approx(3.1)


def test_windows_without_values_give_no_p95() -> None:
    empty = LatencyWindow(bounds=(1.0, 2.0), counts=(0, 0, 0))
    assert merged_quantile(0.95, [empty]) is None
    assert merged_quantile(0.95, []) is None


@pytest.mark.parametrize(
    "histogram",
    [
        {"bounds": [1.0, 2.0, 5.0], "counts": [50, 40, 10]},  # no overflow count
        {"bounds": [2.0, 1.0, 5.0], "counts": [50, 40, 8, 2]},  # not increasing
        {"bounds": [0.0, 2.0, 5.0], "counts": [50, 40, 8, 2]},  # no log space
    ],
)
def test_a_malformed_histogram_falls_back_to_the_windows_p95(histogram: dict[str, Any]) -> None:
    payload = {"requests": 100, "latency": {"count": 100, "p95_ms": 4.0}}
    good = {**payload, "latency_histogram": {"bounds": [1.0, 2.0, 5.0], "counts": [50, 40, 8, 2]}}
    assert summarize([{**payload, "latency_histogram": histogram}]).p95_ms == 4.0
    assert summarize([good, {**payload, "latency_histogram": histogram}]).p95_ms == 4.0
