"""Typed strategies and gates: parsing, plans, and each gate against measured metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.sketches import InputSketches, SketchSet
from edgefleet.codec import encode
from fleet_server.rollouts.metrics import (
    PSI_FLOOR,
    WaveMetrics,
    drift_by_feature,
    drift_score,
    psi,
    summarize,
)
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


def test_summaries_merge_windows() -> None:
    old = summarize([_telemetry(0.5, 2.0), _telemetry(0.5, 4.0, 30)])
    assert old.requests == 40 and old.errors == 2
    assert old.p95_ms == pytest.approx((2.0 * 10 + 4.0 * 30) / 40)
    assert old.sketches is not None
    assert old.sketches["output[0]"].count == 40
    assert old.sketches["output[0]"].std == pytest.approx(0.5)
    assert drift_score(summarize([_telemetry(1.0, 3.0)]), summarize([])) is None


def test_psi_is_the_textbook_sum() -> None:
    assert psi([50, 50], [50, 50]) == 0.0
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi([50, 50], [90, 10]) == pytest.approx(expected)
    assert psi([100, 0], [50, 50]) == pytest.approx(
        (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - PSI_FLOOR) * math.log(0.5 / PSI_FLOOR)
    )  # an empty bin is floored, not infinite
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2], [1, 2, 3])


def _agent_windows(rng: np.random.Generator, shift: float, n: int = 5) -> list[dict[str, Any]]:
    """Telemetry payloads whose sketches come from the agent's own SketchSet: 3 input
    features ~ N(0, 1), the second shifted by ``shift``; outputs ~ N(0.5, 0.2)."""
    payloads = []
    for _ in range(n):
        inputs, outputs = SketchSet(max_features=3), SketchSet(max_features=1)
        x = rng.normal(0.0, 1.0, size=(400, 3))
        x[:, 1] += shift
        inputs.add(x)
        outputs.add(rng.normal(0.5, 0.2, size=(400, 1)))
        payloads.append(
            {
                "requests": 400,
                "input_sketches": [encode(s) for s in inputs.sketches()],
                "output_sketches": [encode(s) for s in outputs.sketches()],
            }
        )
    return payloads


def test_drift_is_the_largest_psi_over_the_agents_histograms() -> None:
    rng = np.random.default_rng(7)
    old = summarize(_agent_windows(rng, 0.0))
    same = summarize(_agent_windows(rng, 0.0))
    moved = summarize(_agent_windows(rng, 1.0))
    assert old.sketches is not None and old.sketches["input[1]"].histogram is not None
    assert old.sketches["input[1]"].count == 2000  # 5 windows merged

    matching = drift_by_feature(same, old)
    assert sorted(matching) == ["input[0]", "input[1]", "input[2]", "output[0]"]
    assert max(matching.values()) < 0.02
    differing = drift_by_feature(moved, old)
    assert differing["input[1]"] > 0.25  # a major shift, on the one feature that moved
    assert max(v for k, v in differing.items() if k != "input[1]") < 0.02
    assert drift_score(moved, old) == differing["input[1]"]

    gate = MaxDrift(max=0.1)
    assert gate.check(WaveMetrics(drift=drift_score(same, old))).ok
    refused = gate.check(WaveMetrics(drift=drift_score(moved, old)))
    assert not refused.ok and refused.detail == f"largest PSI of any feature {refused.value:.3f}"
    assert gate.check(WaveMetrics(drift=None)).ok  # nothing sketched: nothing to hold against


def test_drift_names_the_input_of_a_model_with_several_inputs() -> None:
    """Sketches from the agent's InputSketches of named examples: 'ids' moves, 'mask' not."""
    rng = np.random.default_rng(3)

    def windows(shift: float) -> list[dict[str, Any]]:
        payloads = []
        for _ in range(3):
            inputs = InputSketches(max_features=2)
            ids = rng.normal(0.0, 1.0, size=(300, 2))
            ids[:, 0] += shift
            mask = rng.normal(0.0, 1.0, size=(300, 2))
            inputs.add_examples([{"ids": i, "mask": m} for i, m in zip(ids, mask, strict=True)])
            payloads.append(
                {"requests": 300, "input_sketches": [encode(s) for s in inputs.sketches()]}
            )
        return payloads

    old, moved = summarize(windows(0.0)), summarize(windows(1.0))
    differing = drift_by_feature(moved, old)
    assert sorted(differing) == ["input.ids[0]", "input.ids[1]", "input.mask[0]", "input.mask[1]"]
    assert differing["input.ids[0]"] > 0.25
    assert max(v for k, v in differing.items() if k != "input.ids[0]") < 0.05


def _sketched(values: np.ndarray) -> Any:
    sketches = SketchSet(max_features=1)
    sketches.add(values.reshape(-1, 1))
    return summarize([{"output_sketches": [encode(s) for s in sketches.sketches()]}])


def test_deciles_see_a_shift_inside_one_wide_bucket() -> None:
    rng = np.random.default_rng(11)
    old = _sketched(rng.normal(0.55, 0.04, 4000))  # all of it in the agent's (0.3, 1] bucket
    moved = _sketched(rng.normal(0.75, 0.04, 4000))
    old_hist, new_hist = old.sketches["output[0]"].histogram, moved.sketches["output[0]"].histogram
    assert psi(old_hist[1], new_hist[1]) < 0.01  # the buckets alone are blind to it
    assert drift_by_feature(moved, old)["output[0]"] > 1.0


def test_buckets_see_a_change_of_shape_with_the_same_moments() -> None:
    rng = np.random.default_rng(5)
    old = _sketched(rng.normal(0.0, 1.0, 4000))
    modes = rng.choice([-0.95, 0.95], 4000) + rng.normal(0.0, 0.3, 4000)  # mean 0, std ~1
    two_modes = _sketched(modes)
    assert two_modes.sketches["output[0]"].std == pytest.approx(1.0, abs=0.05)
    assert drift_by_feature(two_modes, old)["output[0]"] > 0.25


def test_without_histograms_psi_bins_the_baselines_deciles_of_a_normal() -> None:
    old = summarize([_telemetry(0.5, 2.0, 1000)])  # std 0.5, no histogram
    assert old.sketches is not None and old.sketches["output[0]"].histogram is None
    assert drift_score(summarize([_telemetry(0.5, 2.0, 1000)]), old) == pytest.approx(0.0)
    moved = drift_score(summarize([_telemetry(1.0, 2.0, 1000)]), old)  # one std up
    assert moved is not None and moved > 0.25
    small = drift_score(summarize([_telemetry(0.55, 2.0, 1000)]), old)  # a tenth of a std
    assert small is not None and small < 0.02


def test_histograms_with_other_bounds_fall_back_to_the_normal_binning() -> None:
    rng = np.random.default_rng(3)
    old = summarize(_agent_windows(rng, 0.0))
    other = SketchSet(max_features=3, bounds=(-1.0, 0.0, 1.0))
    x = rng.normal(0.0, 1.0, size=(2000, 3))
    x[:, 1] += 1.0
    other.add(x)
    new = summarize([{"input_sketches": [encode(s) for s in other.sketches()]}])
    scores = drift_by_feature(new, old)
    assert scores["input[1]"] > 0.25 and scores["input[0]"] < 0.02


def test_latency_histograms_interpolate_the_p95_inside_its_bucket() -> None:
    """Histograms win over the windows' p95 mean (see ``test_latency.py`` for accuracy); a
    reported p95 outside the bucket the histogram puts it in is kept to that bucket."""
    payload = {
        "requests": 100,
        "latency": {"count": 100, "p95_ms": 99.0},
        "latency_histogram": {"bounds": [1.0, 2.0, 5.0], "counts": [50, 40, 8, 2]},
    }
    assert summarize([payload]).p95_ms == pytest.approx(2.0 * 2.5 ** (5 / 8))
    without = {**payload, "latency_histogram": None}
    assert summarize([payload, without]).p95_ms == pytest.approx(99.0)  # not all have one
