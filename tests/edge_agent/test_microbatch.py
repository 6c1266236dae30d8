"""Stream-mode micro-batching over real HTTP: concurrent single requests share model runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_agent.api import LocalApi, PredictionService
from edge_agent.outbox import Outbox
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ModelSlot
from edge_agent.telemetry import Metrics
from tests.edge_agent.helpers import expected
from tests.edge_agent.test_api import Client, served

pytestmark = pytest.mark.integration


@pytest.fixture
def batched(
    tmp_path: Path, backend: OnnxRuntimeBackend
) -> Iterator[tuple[PredictionService, Client]]:
    service = PredictionService(
        slot=ModelSlot(),
        outbox=Outbox(tmp_path / "outbox.sqlite"),
        metrics=Metrics(),
        micro_batch=8,
        micro_batch_wait_ms=20.0,
    )
    service.slot.swap(served(tmp_path, backend, 1))
    api = LocalApi(service, "127.0.0.1", 0)
    api.start()
    try:
        yield service, Client(api)
    finally:
        api.stop()
        service.close()
        service.outbox.close()


def test_concurrent_requests_share_runs_and_each_gets_its_own_answer(
    batched: tuple[PredictionService, Client],
) -> None:
    service, client = batched
    clients, per_client = 16, 10
    answers: dict[tuple[int, int], tuple[int, dict[str, object]]] = {}
    lock = threading.Lock()

    def run(index: int) -> None:
        for step in range(per_client):
            x = [index / 16, step / 10, 0.5, 0.25]
            result = client.predict({"input": x})
            with lock:
                answers[(index, step)] = result

    threads = [threading.Thread(target=run, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == clients * per_client
    record_ids = set()
    for (index, step), (status, body) in answers.items():
        assert status == 200, body
        x = np.array([[index / 16, step / 10, 0.5, 0.25]], np.float32)
        np.testing.assert_allclose(body["output"], expected(x, 1)[0], rtol=1e-5, atol=1e-6)
        assert 1 <= int(str(body["batched_with"])) <= 8
        record_ids.add(body["record_id"])
    assert len(record_ids) == clients * per_client
    batcher = service.batcher
    assert batcher is not None
    assert batcher.examples == clients * per_client
    assert batcher.batches < clients * per_client, "no request shared a run"
    assert max(int(str(b["batched_with"])) for _, b in answers.values()) > 1
    # Every example is logged once, under its own record id.
    stored = {record.record_id for record in service.outbox.pending(1000)}
    assert stored == record_ids
    assert service.metrics.totals().examples == clients * per_client


def test_bad_input_is_refused_before_batching_and_batch_requests_bypass_it(
    batched: tuple[PredictionService, Client],
) -> None:
    service, client = batched
    status, body = client.predict({"input": [1, 2, 3]})
    assert status == 400
    assert "shape" in str(body["error"])
    status, body = client.predict({"inputs": [[0.1, 0.2, 0.3, 0.4]] * 3})
    assert status == 200
    assert len(body["outputs"]) == 3
    assert service.batcher is not None and service.batcher.examples == 0
    # A lone request waits at most the batching window, then runs alone.
    status, body = client.predict({"input": [0.1, 0.2, 0.3, 0.4]})
    assert (status, body["batched_with"]) == (200, 1)
