"""``GET /metrics``: Prometheus text format, parsed strictly; numbers that match the traffic."""

from __future__ import annotations

import http.client
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_agent.api import LocalApi, PredictionService
from edge_agent.outbox import Outbox, OutboxConfig, OverflowPolicy
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ModelSlot
from edge_agent.shadow import ShadowRunner
from edge_agent.telemetry import Metrics
from tests.edge_agent.test_api import Client, served

pytestmark = pytest.mark.integration

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


@dataclass
class Family:
    kind: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)


def parse(text: str) -> dict[str, Family]:
    """A strict parser of the text format: every sample belongs to a declared family, no
    duplicate series, labels well formed, values numbers."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}, line
            assert name not in families, f"family {name} declared twice"
            assert name in helped, f"{name}: TYPE without HELP"
            families[name] = Family(kind)
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, raw_labels, raw_value = match.groups()
        labels: set[tuple[str, str]] = set()
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                label = _LABEL.match(raw_labels, pos)
                assert label, f"bad labels in {line!r}"
                labels.add((label.group(1), label.group(2)))
                pos = label.end()
        value = float(raw_value.replace("+Inf", "inf"))
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        family = families.get(name) or families.get(base)
        assert family is not None, f"sample {name} has no TYPE line"
        if family.kind == "histogram":
            assert name != base, f"histogram {base} has a bare sample"
        key = (name, frozenset(labels))
        assert key not in family.samples, f"duplicate series {line!r}"
        family.samples[key] = value
    return families


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    family = families.get(name) or families[base]
    return family.samples[(name, frozenset(labels.items()))]


def scrape(client: Client) -> tuple[str, dict[str, Family]]:
    conn = http.client.HTTPConnection(client.host, client.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200
        content_type = response.getheader("Content-Type") or ""
    finally:
        conn.close()
    return content_type, parse(body)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[PredictionService, Client]]:
    outbox = Outbox(
        tmp_path / "outbox.sqlite",
        OutboxConfig(max_bytes=1500, policy=OverflowPolicy.DROP_OLDEST),
    )
    service = PredictionService(slot=ModelSlot(), outbox=outbox, metrics=Metrics())
    api = LocalApi(service, "127.0.0.1", 0, max_body=1 << 16)
    api.start()
    try:
        yield service, Client(api)
    finally:
        api.stop()
        if service.shadow is not None:
            service.shadow.stop()
        outbox.close()


def test_metrics_before_any_model(stack: tuple[PredictionService, Client]) -> None:
    _, client = stack
    content_type, families = scrape(client)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert value(families, "edgefleet_agent_model_active") == 0
    assert "edgefleet_agent_model_info" not in families
    assert "edgefleet_agent_shadow_top1_agreement" not in families
    assert value(families, "edgefleet_agent_requests_total") == 0
    assert value(families, "edgefleet_agent_request_latency_seconds_count") == 0


def test_metrics_count_requests_errors_latency_outbox_model_and_shadow(
    tmp_path: Path, backend: OnnxRuntimeBackend, stack: tuple[PredictionService, Client]
) -> None:
    service, client = stack
    service.slot.swap(served(tmp_path, backend, 1))
    shadow = ShadowRunner(served(tmp_path, backend, 1))  # same weights: full agreement
    shadow.start()
    service.shadow = shadow
    for index in range(5):
        assert client.predict({"input": [0.1 * index, 0.2, 0.3, 0.4]})[0] == 200
    assert client.predict({"inputs": [[0.1, 0.2, 0.3, 0.4]] * 3})[0] == 200
    assert client.predict({"input": [1, 2, 3]})[0] == 400
    assert client.predict({"input": [float("nan")] * 4})[0] == 400  # json.dumps writes NaN
    assert shadow.drain()

    content_type, families = scrape(client)
    assert content_type.startswith("text/plain")
    assert families["edgefleet_agent_requests_total"].kind == "counter"
    assert value(families, "edgefleet_agent_requests_total") == 6
    assert value(families, "edgefleet_agent_examples_total") == 8
    assert value(families, "edgefleet_agent_errors_total") == 2

    latency = families["edgefleet_agent_request_latency_seconds"]
    assert latency.kind == "histogram"
    buckets = sorted(
        (float(dict(labels)["le"].replace("+Inf", "inf")), count)
        for (name, labels), count in latency.samples.items()
        if name.endswith("_bucket")
    )
    assert buckets[-1] == (math.inf, 6)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), "histogram buckets must be cumulative"
    assert value(families, "edgefleet_agent_request_latency_seconds_count") == 6
    assert 0 < value(families, "edgefleet_agent_request_latency_seconds_sum") < 6.0

    # The outbox (1500-byte bound) holds what fits; depth, bytes and drops add up to 8 records.
    depth = value(families, "edgefleet_agent_outbox_depth")
    dropped = value(families, "edgefleet_agent_outbox_dropped_total", reason="oldest")
    assert depth == service.outbox.depth() > 0
    assert value(families, "edgefleet_agent_outbox_committed_total") == 8
    assert depth + dropped == 8
    assert dropped > 0, "the 1500-byte bound should have dropped some records"
    assert value(families, "edgefleet_agent_outbox_dropped_total", reason="rejected") == 0
    assert 0 < value(families, "edgefleet_agent_outbox_bytes") <= 1500

    info = families["edgefleet_agent_model_info"]
    ((_, labels),) = info.samples
    assert dict(labels) == {
        "model": "tiny",
        "version": "1.0.0",
        "precision": "fp32",
        "provider": "CPUExecutionProvider",
        "artifact_sha256": "1" * 64,
    }
    assert value(families, "edgefleet_agent_model_active") == 1

    shadow_labels = {"model": "tiny", "version": "1.0.0"}
    assert value(families, "edgefleet_agent_shadow_compared_total", **shadow_labels) == 8
    assert value(families, "edgefleet_agent_shadow_top1_agreement", **shadow_labels) == 1.0
    assert value(families, "edgefleet_agent_shadow_mean_abs_diff", **shadow_labels) == 0.0
    # Scraping does not reset the telemetry window, and the telemetry window does not
    # reset the scrape.
    assert shadow.take().compared == 8
    assert service.metrics.take().requests == 8
    _, again = scrape(client)
    assert value(again, "edgefleet_agent_requests_total") == 6
    assert value(again, "edgefleet_agent_shadow_compared_total", **shadow_labels) == 8


def test_label_values_are_escaped() -> None:
    from edge_agent.prometheus import escape_label

    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
