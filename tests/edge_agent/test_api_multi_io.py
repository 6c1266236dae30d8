"""The local API and ``agent predict`` with a real two-input, two-output ONNX model.

The model (built with ``onnx.helper``): ``a`` float32 and ``b`` int64, both ``(batch, seq)``;
``total = a + float(b)`` and ``scaled = 2 * a``. Real HTTP on loopback, real onnxruntime, a
real outbox, the real CLI in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.api import LocalApi, PredictionService
from edge_agent.batch import AgentClient, OutputWriter, read_examples, run_batch
from edge_agent.outbox import Outbox
from edge_agent.recording import input_digest
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ModelSlot, ServedModel
from edge_agent.shadow import ShadowRunner
from edge_agent.telemetry import Metrics
from edgefleet.bundle import ModelInterface, TensorSpec
from tests.edge_agent.helpers import manifest_for
from tests.edge_agent.test_api import Client, served

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def write_two_io(path: Path, scale: float = 2.0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "bf"], ["total"]),
        helper.make_node("Mul", ["a", "two"], ["scaled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_io",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", "seq"]),
        ],
        [numpy_helper.from_array(np.float32([scale]), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def served_two_io(tmp_path: Path, backend: OnnxRuntimeBackend, scale: float = 2.0) -> ServedModel:
    interface = ModelInterface(
        inputs=(
            TensorSpec(name="a", dtype="float32", shape=("batch", "seq")),
            TensorSpec(name="b", dtype="int64", shape=("batch", "seq")),
        ),
        outputs=(
            TensorSpec(name="total", dtype="float32", shape=("batch", "seq")),
            TensorSpec(name="scaled", dtype="float32", shape=("batch", "seq")),
        ),
    )
    manifest = replace(manifest_for(name="two"), interface=interface)
    path = write_two_io(tmp_path / "two.onnx", scale)
    return ServedModel(
        manifest=manifest,
        prepared=backend.prepare(path, manifest),
        artifact_sha256="2" * 64,
        deployment_id="d2",
        path=tmp_path,
    )


def predict_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", "agent", "predict", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def want(a: list[float], b: list[int]) -> dict[str, list[float]]:
    x = np.float32(a)
    return {"total": (x + np.float32(b)).tolist(), "scaled": (2 * x).tolist()}


@pytest.fixture
def two(tmp_path: Path, backend: OnnxRuntimeBackend) -> ServedModel:
    return served_two_io(tmp_path, backend)


@contextlib.contextmanager
def _stack(
    tmp_path: Path, model: ServedModel, **options: Any
) -> Iterator[tuple[PredictionService, LocalApi, Client]]:
    service = PredictionService(
        slot=ModelSlot(), outbox=Outbox(tmp_path / "outbox.sqlite"), metrics=Metrics(), **options
    )
    service.slot.swap(model)
    api = LocalApi(service, "127.0.0.1", 0)
    api.start()
    try:
        yield service, api, Client(api)
    finally:
        api.stop()
        service.close()
        service.outbox.close()


@pytest.fixture
def stack(tmp_path: Path, two: ServedModel) -> Iterator[tuple[PredictionService, LocalApi, Client]]:
    with _stack(tmp_path, two, input_sample_rate=1.0) as parts:
        yield parts


def test_one_named_example_answers_every_output_by_name_and_logs_it(
    stack: tuple[PredictionService, LocalApi, Client],
) -> None:
    service, _, client = stack
    status, body = client.predict({"inputs": {"a": [1.0, 2.5, -3.0], "b": [1, 2, 3]}})
    assert status == 200, body
    assert body["output"] == want([1.0, 2.5, -3.0], [1, 2, 3])
    assert (body["model"], body["logged"]) == ("two", True)
    (record,) = service.outbox.pending(10)
    assert record.record_id == body["record_id"]
    assert record.output == body["output"]
    feed = {"a": np.float32([1.0, 2.5, -3.0]), "b": np.int64([1, 2, 3])}
    assert record.input_digest == input_digest(feed)
    assert record.input == {"a": [1.0, 2.5, -3.0], "b": [1, 2, 3]}
    # The digest covers every input: changing only b changes it.
    assert input_digest({**feed, "b": np.int64([1, 2, 4])}) != record.input_digest
    # {"input": {...}} is the same request.
    status, again = client.predict({"input": {"b": [1, 2, 3], "a": [1.0, 2.5, -3.0]}})
    assert (status, again["output"]) == (200, body["output"])
    status, info = client.request("GET", "/v1/model")
    assert info["example_shapes"] == {"a": ["seq"], "b": ["seq"]}


def test_named_inputs_get_their_own_feature_sketches(
    stack: tuple[PredictionService, LocalApi, Client],
) -> None:
    service, _, client = stack
    a = [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]
    b = [[10, 20, 30], [30, 40, 50]]
    for a_row, b_row in zip(a, b, strict=True):
        assert client.predict({"inputs": {"a": a_row, "b": b_row}})[0] == 200
    sketches = service.metrics.take().input_sketches
    by_key = {(s.input_name, s.index): s for s in sketches}
    assert sorted(by_key) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    assert by_key[("a", 1)].mean == pytest.approx(3.0)
    assert by_key[("b", 2)].mean == pytest.approx(40.0)
    assert {s.count for s in sketches} == {2}


def test_a_batch_of_named_examples_with_different_lengths(
    stack: tuple[PredictionService, LocalApi, Client],
) -> None:
    service, _, client = stack
    examples = [
        {"a": [0.5, 1.5], "b": [1, 1]},
        {"a": [2.0, 3.0], "b": [0, -1]},
        {"a": [1.0, 1.0, 1.0], "b": [7, 8, 9]},  # another length: runs on its own
    ]
    status, body = client.predict({"inputs": examples})
    assert status == 200, body
    assert body["outputs"] == [want(e["a"], e["b"]) for e in examples]
    assert len(service.outbox.pending(10)) == 3


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": {"a": [1.0]}}, "inputs is missing input 'b'; model two has inputs ('a', 'b')"),
        (
            {"inputs": {"a": [1.0], "b": [1], "c": [1]}},
            "inputs names unknown input 'c'; model two has inputs ('a', 'b')",
        ),
        ({"inputs": {"a": [[1.0]], "b": [1]}}, "inputs['a'] has shape (1, 1) but model input 'a'"),
        ({"inputs": {"a": [1.0], "b": [1.5]}}, "inputs['b'] holds non-integer values"),
        ({"input": {"a": [1.0, "NaN"], "b": [1, 2]}}, "input['a'] must hold only numbers"),
        (
            {"inputs": [{"a": [1.0], "b": [1]}, {"a": [1.0, 2.0], "b": [1]}]},
            "inputs[1]['b'] has 1 along axis 'seq' but inputs[1]['a'] has 2",
        ),
        (
            {"input": [1.0, 2.0]},
            "input must be an object with one entry per model input ('a', 'b')",
        ),
        ({"inputs": 3}, '"inputs" must be a list of examples or an object'),
    ],
)
def test_bad_inputs_are_400_naming_the_input(
    stack: tuple[PredictionService, LocalApi, Client], payload: Any, message: str
) -> None:
    service, _, client = stack
    status, body = client.predict(payload)
    assert status == 400
    assert body["error"].startswith(message), body["error"]
    assert service.outbox.depth() == 0


def test_nan_in_one_input_is_named(stack: tuple[PredictionService, LocalApi, Client]) -> None:
    _, _, client = stack
    # JSON has no NaN literal; Python's json writes one and the agent's parser reads it.
    status, body = client.request(
        "POST", "/v1/predict", b'{"inputs": {"a": [1.0, NaN], "b": [1, 2]}}'
    )
    assert status == 400
    assert body["error"] == "inputs['a'] contains NaN or infinity at index [1]"


def test_a_one_input_model_takes_its_input_by_name_too(
    tmp_path: Path, backend: OnnxRuntimeBackend
) -> None:
    with _stack(tmp_path, served(tmp_path, backend, 1)) as (service, _, client):
        status, plain = client.predict({"input": [1.0, 2.0, 3.0, 4.0]})
        status, named = client.predict({"inputs": {"x": [1.0, 2.0, 3.0, 4.0]}})
        assert status == 200, named
        assert named["output"] == plain["output"]  # one output: the unchanged list shape
        records = service.outbox.pending(10)
        assert records[0].input_digest == records[1].input_digest
        status, body = client.predict({"inputs": {"z": [1.0, 2.0, 3.0, 4.0]}})
        assert (status, body["error"]) == (
            400,
            "inputs names unknown input 'z'; model tiny has inputs ('x')",
        )


def test_concurrent_named_requests_share_micro_batches(tmp_path: Path, two: ServedModel) -> None:
    def call(client: Client, n: int) -> list[tuple[int, Any, dict[str, Any]]]:
        answers = []
        for k in range(5):
            a, b = [float(n), float(k)], [k, n]
            status, body = client.predict({"inputs": {"a": a, "b": b}})
            answers.append((status, body.get("output"), want(a, b)))
        return answers

    with (
        _stack(tmp_path, two, micro_batch=8, micro_batch_wait_ms=20) as (service, _, client),
        ThreadPoolExecutor(8) as pool,
    ):
        answers = [a for part in pool.map(lambda n: call(client, n), range(8)) for a in part]
        assert len(answers) == 40
        assert all(status == 200 and got == wanted for status, got, wanted in answers)
        batcher = service.batcher
        assert batcher is not None and batcher.examples == 40


def test_shadow_mirrors_named_examples_and_skips_a_candidate_that_cannot_take_them(
    tmp_path: Path,
    backend: OnnxRuntimeBackend,
    two: ServedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "candidate").mkdir()
    same = ShadowRunner(served_two_io(tmp_path / "candidate", backend))
    other = ShadowRunner(served(tmp_path, backend, 1))
    for index, shadow in enumerate((same, other)):
        shadow.start()
        (tmp_path / f"s{index}").mkdir()
        with _stack(tmp_path / f"s{index}", two, shadow=shadow) as (_, _, client):
            for k in range(3):
                assert client.predict({"inputs": {"a": [1.0, k], "b": [k, 2]}})[0] == 200
            assert shadow.drain()
        shadow.stop()
    stats = same.totals()
    assert (stats.compared, stats.top1_agreement, stats.mean_abs_diff) == (3, 1.0, 0.0)
    assert other.totals().compared == 0
    assert any(
        "shadow: skipping mirrored requests: the candidate tiny 1.0.0 has inputs 'x'" in r.message
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_shadow_compares_every_output_not_only_the_first(
    tmp_path: Path, backend: OnnxRuntimeBackend, two: ServedModel
) -> None:
    # The candidate's first output ('total') is the active model's; its second ('scaled') is
    # negated, so its top-1 flips on every example.
    (tmp_path / "candidate").mkdir()
    shadow = ShadowRunner(served_two_io(tmp_path / "candidate", backend, scale=-2.0))
    shadow.start()
    with _stack(tmp_path, two, shadow=shadow) as (_, _, client):
        for k in range(4):
            assert client.predict({"inputs": {"a": [1.0, k + 2.0], "b": [k, 2]}})[0] == 200
        assert shadow.drain()
    shadow.stop()
    stats = shadow.totals()
    assert (stats.compared, stats.top1_agreement) == (4, 0.0)
    # mean over the two outputs of |2a - (-2a)| = 4|a|: (0 + mean(4|a|)) / 2 per example
    expected = np.mean([np.mean(4 * np.abs([1.0, k + 2.0])) / 2 for k in range(4)])
    assert stats.mean_abs_diff == pytest.approx(expected)


def test_agent_predict_over_an_npz_with_one_array_per_input(
    tmp_path: Path, stack: tuple[PredictionService, LocalApi, Client]
) -> None:
    service, api, _ = stack
    rng = np.random.default_rng(3)
    a = rng.standard_normal((9, 5)).astype(np.float32)
    b = rng.integers(-5, 5, (9, 5))
    np.savez(tmp_path / "in.npz", b=b, a=a)
    host, port = api.address
    listen = f"{host}:{port}"
    result = predict_cli(
        "--input",
        str(tmp_path / "in.npz"),
        "--output",
        str(tmp_path / "out.npz"),
        "--listen",
        listen,
        "--batch-size",
        "4",
    )
    assert result.returncode == 0, result.stderr
    assert "9 examples predicted by two 1.0.0" in result.stderr
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["total"], a + b.astype(np.float32), rtol=1e-6)
        np.testing.assert_allclose(out["scaled"], 2 * a, rtol=1e-6)
    assert service.outbox.depth() == 9

    # .jsonl out, in process; an archive without 'b' is refused naming it.
    writer = OutputWriter(tmp_path / "out.jsonl", None)
    run_batch(read_examples(tmp_path / "in.npz"), AgentClient((host, port)), writer, batch_size=5)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[0] == want(a[0].tolist(), b[0].tolist())
    np.savez(tmp_path / "only-a.npz", a=a)
    result = predict_cli("--input", str(tmp_path / "only-a.npz"), "--listen", listen)
    assert result.returncode == 1
    assert "no array named 'b' for the model's inputs 'a', 'b'" in result.stderr
    assert "Traceback" not in result.stderr
    np.save(tmp_path / "a.npy", a)
    result = predict_cli("--input", str(tmp_path / "a.npy"), "--listen", listen)
    assert result.returncode == 1
    assert "the model has inputs 'a', 'b'; give an .npz with one array per input" in result.stderr
