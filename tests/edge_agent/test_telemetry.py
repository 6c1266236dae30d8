from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge_agent.telemetry import ActiveInfo, Metrics, TelemetryLoop
from edgefleet.protocol.messages import Telemetry
from tests.edge_agent.helpers import wait_for


def test_window_summary_and_reset() -> None:
    metrics = Metrics()
    for ms in range(1, 101):
        metrics.record_request(float(ms))
    metrics.record_error()
    seconds, requests, errors, latency = metrics.take()
    assert (requests, errors, latency.count) == (100, 1, 100)
    assert latency.p50_ms == pytest.approx(50.5)
    assert latency.p95_ms == pytest.approx(95.05)
    assert latency.max_ms == 100.0
    assert seconds >= 0
    _, requests, errors, latency = metrics.take()
    assert (requests, errors, latency.count, latency.p50_ms) == (0, 0, 0, None)


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
