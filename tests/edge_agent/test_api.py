from __future__ import annotations

import http.client
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.api import LocalApi, PredictionService
from edge_agent.health import HealthMonitor
from edge_agent.outbox import Outbox, OutboxConfig, OutboxMode
from edge_agent.recording import Recorder, RecordIds, input_digest
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.segments import SegmentFormat
from edge_agent.serving import ModelSlot, ServedModel
from edge_agent.telemetry import Metrics
from tests.edge_agent.helpers import expected, manifest_for, write_tiny_onnx

pytestmark = pytest.mark.integration


def served(tmp_path: Path, backend: OnnxRuntimeBackend, version: int) -> ServedModel:
    manifest = manifest_for(version=f"{version}.0.0")
    path = write_tiny_onnx(tmp_path / f"model-{version}.onnx", version)
    return ServedModel(
        manifest=manifest,
        prepared=backend.prepare(path, manifest),
        artifact_sha256=f"{version}" * 64,
        deployment_id=f"d{version}",
        path=tmp_path,
    )


class Client:
    def __init__(self, api: LocalApi) -> None:
        self.host, self.port = api.address

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def predict(self, payload: Any) -> tuple[int, dict[str, Any]]:
        return self.request("POST", "/v1/predict", json.dumps(payload).encode())


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[PredictionService, LocalApi, Client]]:
    service = PredictionService(
        slot=ModelSlot(), outbox=Outbox(tmp_path / "outbox.sqlite"), metrics=Metrics()
    )
    api = LocalApi(service, "127.0.0.1", 0, max_body=4096)
    api.start()
    try:
        yield service, api, Client(api)
    finally:
        api.stop()
        service.outbox.close()


def test_no_model_yet_is_503(stack: tuple[PredictionService, LocalApi, Client]) -> None:
    _, _, client = stack
    status, body = client.request("GET", "/v1/health")
    assert (status, body["status"]) == (503, "no model")
    status, body = client.predict({"input": [1, 2, 3, 4]})
    assert status == 503
    assert "no model" in body["error"]
    assert client.request("GET", "/v1/model")[0] == 503


def test_predict_answers_and_logs_a_record(
    tmp_path: Path,
    backend: OnnxRuntimeBackend,
    stack: tuple[PredictionService, LocalApi, Client],
) -> None:
    service, _, client = stack
    service.slot.swap(served(tmp_path, backend, 1))
    status, body = client.predict({"input": [1.0, 2.0, 3.0, 4.0]})
    assert status == 200, body
    x = np.array([[1, 2, 3, 4]], dtype=np.float32)
    np.testing.assert_allclose(body["output"], expected(x, 1)[0], rtol=1e-5)
    assert (body["model"], body["version"]) == ("tiny", "1.0.0")
    assert body["latency_ms"] > 0
    (record,) = service.outbox.pending(10)
    assert record.record_id == body["record_id"]
    assert record.model_version == "1.0.0"
    assert record.artifact_sha256 == "1" * 64
    assert record.input_digest == input_digest(x[0])
    np.testing.assert_allclose(record.output, body["output"])
    assert client.request("GET", "/v1/health") == (
        200,
        {
            "status": "ok",
            "model": "tiny",
            "version": "1.0.0",
            "mqtt": {"connected": False, "protocol": None},
        },
    )
    status, model = client.request("GET", "/v1/model")
    assert status == 200
    assert model["provider"] == "CPUExecutionProvider"
    assert model["interface"]["inputs"][0]["shape"] == ["batch", 4]
    assert model["example_shape"] == [4]


def test_batch_gives_one_output_and_one_record_per_example(
    tmp_path: Path,
    backend: OnnxRuntimeBackend,
    stack: tuple[PredictionService, LocalApi, Client],
) -> None:
    service, _, client = stack
    service.slot.swap(served(tmp_path, backend, 2))
    inputs = np.arange(12, dtype=np.float32).reshape(3, 4)
    status, body = client.predict({"inputs": inputs.tolist()})
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"], expected(inputs, 2), rtol=1e-5)
    records = service.outbox.pending(10)
    assert [r.seq for r in records] == [1, 2, 3]
    assert [r.record_id for r in records] == body["record_ids"]
    assert service.metrics.total_requests == 3


def test_a_batch_is_stored_as_one_packed_segment_and_reads_back_whole(
    tmp_path: Path, backend: OnnxRuntimeBackend
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    service = PredictionService(
        slot=ModelSlot(), outbox=outbox, metrics=Metrics(), input_sample_rate=1.0
    )
    service.slot.swap(served(tmp_path, backend, 2))
    inputs = np.arange(64 * 4, dtype=np.float32).reshape(64, 4)
    answer = service.predict_examples(list(inputs))
    assert answer["logged"] is True
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        rows = db.execute("SELECT count, format FROM segment").fetchall()
    assert rows == [(64, SegmentFormat.COLUMNS)]
    records = outbox.pending(100)
    assert [r.record_id for r in records] == answer["record_ids"]
    assert [r.input_digest for r in records] == [input_digest(x) for x in inputs]
    assert [r.input for r in records] == inputs.tolist()
    outputs = np.asarray([r.output for r in records], np.float32)
    np.testing.assert_array_equal(outputs, np.asarray(answer["outputs"], np.float32).reshape(64, 3))
    assert {(r.model, r.model_version, r.artifact_sha256) for r in records} == {
        ("tiny", "2.0.0", "2" * 64)
    }
    service.close()
    outbox.close()


def test_fast_mode_stores_several_batches_together_and_exactly(
    tmp_path: Path, backend: OnnxRuntimeBackend
) -> None:
    outbox = Outbox(tmp_path / "fast.sqlite", OutboxConfig(mode=OutboxMode.FAST))
    monitor = HealthMonitor()
    recorder = Recorder(
        outbox=outbox,
        metrics=Metrics(),
        monitor=monitor,
        device_id="dev-1",
        input_sample_rate=0.0,
        on_recorded=lambda: None,
        interval=60.0,  # gathers until close: all five predictions in one write
    )
    model = served(tmp_path, backend, 1)
    batches = [np.arange(n, n + 40, dtype=np.float32).reshape(10, 4) for n in range(0, 200, 40)]
    ids = RecordIds()
    record_ids = [ids.take(10) for _ in batches]
    for batch, taken in zip(batches, record_ids, strict=True):
        recorder.record(model, list(batch), model.run_examples(list(batch)), taken, 1.0, 2.0)
    recorder.close()
    outbox.close()
    with sqlite3.connect(tmp_path / "fast.sqlite") as db:
        rows = db.execute("SELECT count, format FROM segment").fetchall()
    assert rows == [(50, SegmentFormat.COLUMNS)]
    records = Outbox(tmp_path / "fast.sqlite").pending(100)
    assert [r.record_id for r in records] == [i for taken in record_ids for i in taken]
    assert [r.input_digest for r in records] == [input_digest(x) for b in batches for x in b]
    outputs = np.asarray([r.output for r in records], np.float32)
    np.testing.assert_allclose(outputs, expected(np.concatenate(batches), 1), rtol=1e-5)
    assert {r.latency_ms for r in records} == {0.1} and {r.ts for r in records} == {2.0}
    assert monitor.snapshot(model.artifact_sha256).requests == 5  # predictions, not examples


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"input": [1, 2, 3]}, "has shape (3,) but model input 'x' expects (4,)"),
        ({"input": [[1, 2, 3, 4]]}, "has shape (1, 4)"),
        ({"input": [1, 2, "three", 4]}, "only numbers"),
        ({"input": [1, None, 3, 4]}, "only numbers"),
        ({"input": [True, False, True, False]}, "only numbers"),
        ({"input": [[1, 2], [3]]}, "ragged"),
        ({"input": "1,2,3,4"}, "nested list of numbers"),
        ({"inputs": [[1, 2, 3, 4], [1, 2, 3]]}, "inputs[1] has shape (3,)"),
        ({"inputs": []}, "non-empty list"),
        ({"values": [1, 2, 3, 4]}, 'exactly one of "input" or "inputs"'),
        ([1, 2, 3, 4], "JSON object"),
    ],
)
def test_bad_inputs_are_400_naming_the_problem(
    tmp_path: Path,
    backend: OnnxRuntimeBackend,
    stack: tuple[PredictionService, LocalApi, Client],
    payload: Any,
    fragment: str,
) -> None:
    service, _, client = stack
    service.slot.swap(served(tmp_path, backend, 1))
    status, body = client.predict(payload)
    assert status == 400
    assert fragment in body["error"]
    assert service.outbox.depth() == 0
    assert service.metrics.total_errors == 1


def test_nan_and_bad_json_and_oversized_bodies(
    tmp_path: Path,
    backend: OnnxRuntimeBackend,
    stack: tuple[PredictionService, LocalApi, Client],
) -> None:
    service, _, client = stack
    service.slot.swap(served(tmp_path, backend, 1))
    status, body = client.request("POST", "/v1/predict", b'{"input": [1, NaN, 3, 4]}')
    assert status == 400
    assert "NaN or infinity at index [1]" in body["error"]
    status, body = client.request("POST", "/v1/predict", b'{"input": [1, 2, 3, 4')
    assert status == 400
    assert "not valid JSON" in body["error"]
    status, body = client.request(
        "POST", "/v1/predict", json.dumps({"input": [0.5] * 2000}).encode()
    )
    assert status == 413
    assert "exceeds the limit of 4096 bytes" in body["error"]
    assert client.request("GET", "/v1/nothing")[0] == 404
    assert client.predict({"input": [1, 2, 3, 4]})[0] == 200


def test_swap_under_load_never_drops_or_mixes_a_request(
    tmp_path: Path,
    backend: OnnxRuntimeBackend,
    stack: tuple[PredictionService, LocalApi, Client],
) -> None:
    service, _, client = stack
    models = [served(tmp_path, backend, 1), served(tmp_path, backend, 2)]
    service.slot.swap(models[0])
    x = np.array([1.0, -1.0, 0.5, 2.0], dtype=np.float32)
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            status, body = client.predict({"input": x.tolist()})
            if status != 200:
                failures.append(f"{status} {body}")
                continue
            version = int(body["version"].split(".")[0])
            if not np.allclose(body["output"], expected(x[None], version)[0], rtol=1e-5):
                failures.append(f"output of version {version} does not match it")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for index in range(40):
        service.slot.swap(models[index % 2])
        threading.Event().wait(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert service.outbox.depth() == service.metrics.total_requests > 40


def test_fast_mode_records_off_the_serving_path_and_close_commits_them(
    tmp_path: Path, backend: OnnxRuntimeBackend
) -> None:
    outbox = Outbox(tmp_path / "fast.sqlite", OutboxConfig(mode=OutboxMode.FAST))
    metrics = Metrics()
    service = PredictionService(slot=ModelSlot(), outbox=outbox, metrics=metrics)
    service.slot.swap(served(tmp_path, backend, 1))
    x = np.array([1, 2, 3, 4], dtype=np.float32)
    answers = [service.predict_examples([x + n]) for n in range(50)]
    assert all(answer["logged"] is None for answer in answers)
    ids = [answer["record_ids"][0] for answer in answers]
    assert len(set(ids)) == 50 and all(len(i) == 32 for i in ids)
    assert service.close()  # records what is queued
    outbox.close()
    reopened = Outbox(tmp_path / "fast.sqlite")
    records = reopened.pending(100)
    assert [r.record_id for r in records] == ids
    assert records[7].input_digest == input_digest(x + 7)
    assert metrics.total_requests == 50
    assert metrics.take().input_sketches[0].count == 50
    reopened.close()
