from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edge_agent.telemetry import ActiveInfo, Metrics, TelemetryLoop
from edgefleet.protocol.messages import Telemetry
from tests.edge_agent.helpers import wait_for


def test_window_summary_and_reset() -> None:
    metrics = Metrics()
    for ms in range(1, 101):
        metrics.record_request(float(ms), nan=1 if ms % 10 == 0 else 0)
    metrics.record_error()
    window = metrics.take()
    assert (window.requests, window.errors, window.latency.count) == (100, 1, 100)
    assert window.nan_outputs == 10
    assert window.latency.p50_ms == pytest.approx(50.5)
    assert window.latency.p95_ms == pytest.approx(95.05)
    assert window.latency.max_ms == 100.0
    assert window.seconds >= 0
    histogram = window.histogram
    assert sum(histogram.counts) == 100
    assert len(histogram.counts) == len(histogram.bounds) + 1
    # counts[i] counts values <= bounds[i] (and above bounds[i-1]).
    by_bound = dict(zip(histogram.bounds, histogram.counts, strict=False))
    assert (by_bound[1.0], by_bound[2.5], by_bound[5.0], by_bound[10.0]) == (1, 1, 3, 5)
    assert by_bound[100.0] == 50 and histogram.counts[-1] == 0
    window = metrics.take()
    assert (window.requests, window.errors, window.latency.count) == (0, 0, 0)
    assert window.latency.p50_ms is None and window.input_sketches == ()


def test_feature_sketches_match_numpy_and_merge_across_requests() -> None:
    metrics = Metrics(sketch_features=4)
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(n, 4)) * [1, 2, 3, 4] for n in (1, 7, 30)]
    for batch in batches:
        metrics.observe(batch.astype(np.float32), batch[:, :2].astype(np.float32))
    window = metrics.take()
    data = np.concatenate(batches).astype(np.float32).astype(np.float64)
    assert [s.index for s in window.input_sketches] == [0, 1, 2, 3]
    for sketch in window.input_sketches:
        column = data[:, sketch.index]
        assert sketch.count == 38
        assert sketch.mean == pytest.approx(column.mean())
        assert sketch.m2 / (sketch.count - 1) == pytest.approx(column.var(ddof=1))
        assert (sketch.min, sketch.max) == (column.min(), column.max())
        assert sketch.histogram is not None and sum(sketch.histogram.counts) == 38
    assert len(window.output_sketches) == 2


def test_large_examples_are_sketched_at_a_bounded_number_of_positions() -> None:
    metrics = Metrics(sketch_features=8)
    metrics.observe(np.zeros((2, 3, 32, 32), np.float32), np.zeros((2, 10), np.float32))
    window = metrics.take()
    indexes = [s.index for s in window.input_sketches]
    assert len(indexes) == 8 and indexes[0] == 0 and indexes[-1] == 3 * 32 * 32 - 1


def test_loop_holds_the_window_while_disconnected(tmp_path: Path) -> None:
    metrics = Metrics()
    connected = threading.Event()
    sent: list[Telemetry] = []

    def publish(message: Telemetry) -> bool:
        sent.append(message)
        return True

    loop = TelemetryLoop(
        metrics=metrics,
        interval=0.05,
        data_dir=tmp_path,
        outbox_depth=lambda: 7,
        active=lambda: ActiveInfo("tiny", "1.0.0"),
        connected=connected.is_set,
        publish=publish,
    )
    loop.start()
    try:
        for _ in range(5):
            metrics.record_request(2.0)
        threading.Event().wait(0.2)
        assert sent == []
        connected.set()
        wait_for(lambda: sent, what="telemetry once connected")
    finally:
        loop.stop()
    first = sent[0]
    assert first.requests == 5
    assert first.window_s >= 0.2
    assert (first.outbox_depth, first.active_model, first.active_version) == (7, "tiny", "1.0.0")
    assert first.memory_rss_bytes and first.memory_rss_bytes > 10_000_000
    assert first.disk_free_bytes and first.disk_free_bytes > 0


def test_a_failed_publish_folds_back_into_the_next_window(tmp_path: Path) -> None:
    metrics = Metrics()
    outcomes = [False, True]
    sent: list[Telemetry] = []

    def publish(message: Telemetry) -> bool:
        sent.append(message)
        return outcomes.pop(0) if outcomes else True

    loop = TelemetryLoop(
        metrics=metrics,
        interval=0.05,
        data_dir=tmp_path,
        outbox_depth=lambda: 0,
        active=lambda: ActiveInfo(None, None),
        connected=lambda: True,
        publish=publish,
    )
    metrics.record_request(1.0, count=3)
    loop.start()
    try:
        wait_for(lambda: len(sent) >= 2, what="two telemetry attempts")
    finally:
        loop.stop()
    assert [t.requests for t in sent[:2]] == [3, 3]


def test_record_calls_counts_like_record_request_and_sketches_examples_of_two_shapes() -> None:
    one, many = Metrics(sketch_features=4), Metrics(sketch_features=4)
    calls = [(0.3, 1, 0), (2.0, 3, 1), (40.0, 2, 0)]
    for latency_ms, count, nan in calls:
        one.record_request(latency_ms, count=count, nan=nan)
    rng = np.random.default_rng(5)
    same = [rng.normal(size=(4,)).astype(np.float32) for _ in range(5)]
    longer = [rng.normal(size=(6,)).astype(np.float32) for _ in range(2)]  # a dynamic axis
    many.record_calls(calls, same, same)
    many.record_calls([], same + longer, [])
    assert many.totals() == one.totals()
    window, expected_window = many.take(), one.take()
    assert (window.requests, window.nan_outputs) == (6, 1)
    assert window.histogram == expected_window.histogram
    assert window.latency == expected_window.latency
    # the width changed with the longer examples: the sketches restart on them
    assert [s.count for s in window.input_sketches] == [2] * 4
    assert [s.count for s in window.output_sketches] == [5] * 4
    assert window.output_sketches[0].mean == pytest.approx(np.mean([float(x[0]) for x in same]))
