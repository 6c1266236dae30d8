"""Typed strategies and gates: parsing, plans, and each gate against measured metrics."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_server.rollouts.metrics import WaveMetrics, drift_score, summarize
from fleet_server.rollouts.strategy import (
    Canary,
    Count,
    FailedDevices,
    FailedFraction,
    MaxDrift,
    MaxErrorRate,
    MaxLatencyRatio,
    MinInstalled,
    MinShadowAgreement,
    Percent,
    ShadowThenPromote,
    StrategyHolder,
)


def parse(data: object) -> object:
    return StrategyHolder.model_validate({"strategy": data}).strategy


def test_a_canary_parses_into_typed_waves_and_gates() -> None:
    strategy = parse(
        {
            "kind": "canary",
            "waves": [
                {"size": {"kind": "percent", "value": 10}},
                {"size": {"kind": "count", "value": 30}},
            ],
            "gates": {"success": [{"kind": "error_rate", "max": 0.01}], "abort": []},
        }
    )
    assert isinstance(strategy, Canary)
    plans = strategy.plan()
    assert [type(p.size) for p in plans] == [Percent, Count, Percent]  # the rest at the end
    assert isinstance(plans[0].gates.success[0], MaxErrorRate)
    assert [p.size.devices(100) for p in plans] == [10, 30, 100]


def test_unknown_gate_kinds_and_bad_bounds_are_rejected() -> None:
    with pytest.raises(ValidationError, match="p99"):
        parse({"kind": "all_at_once", "gates": {"success": [{"kind": "p99", "max": 1}]}})
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        parse({"kind": "canary", "waves": [{"size": {"kind": "percent", "value": 150}}]})


def test_shadow_then_promote_starts_with_a_shadow_wave_gated_on_agreement() -> None:
    strategy = parse({"kind": "shadow_then_promote", "min_agreement": 0.9})
    assert isinstance(strategy, ShadowThenPromote)
    plans = strategy.plan()
    assert [p.shadow for p in plans] == [True, False]
    assert plans[0].gates.success == [MinShadowAgreement(min=0.9)]


def test_each_gate_against_metrics() -> None:
    m = WaveMetrics(
        with_artifact=10,
        installed=9,
        failed=1,
        requests=200,
        errors=3,
        nan_outputs=1,
        p95_ms=6.0,
        baseline_p95_ms=2.0,
        shadow_compared=50,
        shadow_agreement=0.8,
        drift=0.5,
    )
    assert MinInstalled(min_fraction=0.9).check(m).ok
    assert not MinInstalled(min_fraction=0.95).check(m).ok
    assert MaxErrorRate(max=0.02).check(m).value == pytest.approx(0.02)
    assert not MaxLatencyRatio(max=1.5).check(m).ok
    assert not MinShadowAgreement(min=0.9).check(m).ok
    assert MaxDrift(max=1.0).check(m).ok
    assert FailedFraction(min=0.1).check(m).ok  # fires
    assert not FailedDevices(min=2).check(m).ok


def _telemetry(mean: float, p95: float, requests: int = 10) -> dict[str, object]:
    return {
        "requests": requests,
        "errors": 1,
        "nan_outputs": 0,
        "latency": {"count": requests, "p95_ms": p95},
        "output_sketches": [
            {"index": 0, "count": requests, "mean": mean, "m2": 0.25 * requests, "min": 0, "max": 1}
        ],
    }


def test_summaries_merge_windows_and_drift_is_the_standardized_mean_shift() -> None:
    old = summarize([_telemetry(0.5, 2.0), _telemetry(0.5, 4.0, 30)])
    assert old.requests == 40 and old.errors == 2
    assert old.p95_ms == pytest.approx((2.0 * 10 + 4.0 * 30) / 40)
    new = summarize([_telemetry(1.0, 3.0)])
    assert drift_score(new, old) == pytest.approx(0.5 / 0.5)  # std of old = sqrt(0.25)
    assert drift_score(new, summarize([])) is None


def test_latency_histograms_give_the_p95_bucket() -> None:
    payload = {
        "requests": 100,
        "latency": {"count": 100, "p95_ms": 99.0},
        "latency_histogram": {"bounds": [1.0, 2.0, 5.0], "counts": [50, 40, 8, 2]},
    }
    assert summarize([payload]).p95_ms == 5.0
