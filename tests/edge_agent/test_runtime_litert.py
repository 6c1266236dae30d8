"""The LiteRT backend on real TFLite flatbuffers (one FULLY_CONNECTED op), no mocks."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.errors import RuntimeBackendError
from edge_agent.runtime import backend_for
from edge_agent.runtime.litert import LiteRtBackend, LiteRtModel
from edge_agent.serving import ServedModel
from edgefleet.bundle import Manifest, QuantParams, TensorSpec
from hardware_profiles import HardwareProfile, load_profile
from tests.edge_agent.helpers import IN_FEATURES, expected, manifest_for, write_tiny_tflite

pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")

CORAL = "google/coral-edgetpu"


@pytest.fixture(scope="module")
def coral() -> HardwareProfile:
    return load_profile(CORAL)


def tflite_manifest(batch: str | int = "batch") -> Manifest:
    base = manifest_for(profile=CORAL)
    interface = replace(
        base.interface,
        inputs=(TensorSpec(name="x", dtype="float32", shape=(batch, IN_FEATURES)),),
        outputs=(TensorSpec(name="y", dtype="float32", shape=(batch, 3)),),
    )
    return replace(base, format="tflite", model_file="model.tflite", interface=interface)


def x(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, IN_FEATURES), dtype=np.float32)


def test_registry_gives_litert_for_a_litert_profile(coral: HardwareProfile) -> None:
    backend = backend_for(coral)
    assert isinstance(backend, LiteRtBackend)
    assert backend.supports(tflite_manifest())
    assert not backend.supports(manifest_for())


def test_missing_delegate_falls_back_to_cpu_with_a_log_line(
    tmp_path: Path, coral: HardwareProfile, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_tiny_tflite(tmp_path / "model.tflite")
    with caplog.at_level(logging.WARNING, logger="edge_agent.runtime.litert"):
        model = LiteRtBackend(coral).prepare(path, tflite_manifest())
    assert model.provider == "cpu"
    assert any("edgetpu" in record.getMessage() for record in caplog.records)
    assert any("fallback" in record.getMessage() for record in caplog.records)


def test_no_cpu_fallback_refuses_naming_the_delegate(
    tmp_path: Path, coral: HardwareProfile
) -> None:
    strict = replace(coral, execution=replace(coral.execution, allow_cpu_fallback=False))
    path = write_tiny_tflite(tmp_path / "model.tflite")
    with pytest.raises(RuntimeBackendError, match=r"no LiteRT delegate is usable.*edgetpu"):
        LiteRtBackend(strict).prepare(path, tflite_manifest())


def test_dynamic_batches_resize_and_match_the_math(tmp_path: Path, coral: HardwareProfile) -> None:
    model = LiteRtBackend(coral).prepare(
        write_tiny_tflite(tmp_path / "model.tflite", version=2), tflite_manifest()
    )
    for count in (5, 1, 17, 5):
        inputs = x(count, seed=count)
        (y,) = model.run({"x": inputs})
        assert y.shape == (count, 3)
        np.testing.assert_allclose(y, expected(inputs, 2), rtol=1e-5, atol=1e-5)


def test_static_batch_of_one_runs_example_by_example(
    tmp_path: Path, coral: HardwareProfile
) -> None:
    path = write_tiny_tflite(tmp_path / "static.tflite", batch=1)
    model = LiteRtBackend(coral).prepare(path, tflite_manifest(batch=1))
    inputs = x(4)
    (y,) = model.run({"x": inputs})
    np.testing.assert_allclose(y, expected(inputs, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeBackendError, match=r"shape \[2, 5\]"):
        model.run({"x": np.zeros((2, 5), np.float32)})


def test_served_model_batches_through_litert(tmp_path: Path, coral: HardwareProfile) -> None:
    manifest = tflite_manifest()
    path = write_tiny_tflite(tmp_path / "model.tflite")
    served = ServedModel(
        manifest=manifest,
        prepared=backend_for(coral).prepare(path, manifest),
        artifact_sha256="a" * 64,
        deployment_id="d",
        path=tmp_path,
    )
    inputs = x(6)
    results = served.run_examples(list(inputs))
    np.testing.assert_allclose(
        np.stack([r[0] for r in results]), expected(inputs, 1), rtol=1e-5, atol=1e-5
    )


def test_concurrent_requests_of_different_batch_sizes(
    tmp_path: Path, coral: HardwareProfile
) -> None:
    model: LiteRtModel = LiteRtBackend(coral).prepare(
        write_tiny_tflite(tmp_path / "model.tflite"), tflite_manifest()
    )
    failures: list[str] = []

    def client(seed: int) -> None:
        for step in range(60):
            inputs = x(1 + (seed + step) % 7, seed=seed * 100 + step)
            (y,) = model.run({"x": inputs})
            if y.shape != (len(inputs), 3) or not np.allclose(
                y, expected(inputs, 1), rtol=1e-5, atol=1e-5
            ):
                failures.append(f"client {seed} step {step}: shape {y.shape}")

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_bad_files_and_names_are_named(tmp_path: Path, coral: HardwareProfile) -> None:
    (tmp_path / "junk.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(RuntimeBackendError, match=r"junk\.tflite: LiteRT cannot load"):
        LiteRtBackend(coral).prepare(tmp_path / "junk.tflite", tflite_manifest())
    path = write_tiny_tflite(tmp_path / "model.tflite")
    renamed = replace(
        tflite_manifest(),
        interface=replace(
            tflite_manifest().interface,
            inputs=(TensorSpec(name="image", dtype="float32", shape=("b", 4)),),
        ),
    )
    with pytest.raises(RuntimeBackendError, match=r"inputs \['image'\].*\['x'\]"):
        LiteRtBackend(coral).prepare(path, renamed)


IN_Q = QuantParams(scale=0.05, zero_point=-3)
OUT_Q = QuantParams(scale=0.1, zero_point=7)


def write_int8_io_tflite(path: Path) -> Path:
    """A real full-int8-style flatbuffer: int8 x [batch, 4] (scale 0.05, zero point -3) ->
    DEQUANTIZE -> float -> QUANTIZE -> int8 y [batch, 4] (scale 0.1, zero point 7)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    def tensor(name: str, kind: int, quant: QuantParams | None) -> Any:
        entry = tfl.TensorT()
        entry.name, entry.shape, entry.shapeSignature = name, [1, IN_FEATURES], [-1, IN_FEATURES]
        entry.type, entry.buffer = kind, 0
        if quant is not None:
            entry.quantization = tfl.QuantizationParametersT()
            entry.quantization.scale, entry.quantization.zeroPoint = (
                [quant.scale],
                [quant.zero_point],
            )
        return entry

    codes, ops = [], []
    for index, builtin in enumerate((tfl.BuiltinOperator.DEQUANTIZE, tfl.BuiltinOperator.QUANTIZE)):
        code = tfl.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        codes.append(code)
        op = tfl.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, [index], [index + 1]
        ops.append(op)
    graph = tfl.SubGraphT()
    graph.name = "main"
    graph.tensors = [
        tensor("x", tfl.TensorType.INT8, IN_Q),
        tensor("mid", tfl.TensorType.FLOAT32, None),
        tensor("y", tfl.TensorType.INT8, OUT_Q),
    ]
    graph.inputs, graph.outputs, graph.operators = [0], [2], ops
    model = tfl.ModelT()
    model.version, model.description = 3, "int8 io"
    model.operatorCodes, model.subgraphs = codes, [graph]
    model.buffers = [tfl.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def test_int8_io_is_quantized_and_dequantized_with_the_manifest_params(
    tmp_path: Path, coral: HardwareProfile
) -> None:
    base = tflite_manifest()
    interface = replace(
        base.interface,
        inputs=(
            TensorSpec(name="x", dtype="float32", shape=("batch", IN_FEATURES), quantization=IN_Q),
        ),
        outputs=(
            TensorSpec(name="y", dtype="float32", shape=("batch", IN_FEATURES), quantization=OUT_Q),
        ),
    )
    manifest = replace(base, interface=interface)
    model = LiteRtBackend(coral).prepare(write_int8_io_tflite(tmp_path / "q.tflite"), manifest)
    inputs = (x(6) - 0.5) * 4.0
    (y,) = model.run({"x": inputs})
    assert y.dtype == np.float32 and y.shape == inputs.shape
    # real -> int8 (0.05 steps) -> real -> int8 (0.1 steps) -> real, as the manifest says
    q_in = np.clip(np.round(inputs / IN_Q.scale) + IN_Q.zero_point, -128, 127)
    mid = (q_in - IN_Q.zero_point) * IN_Q.scale
    q_out = np.clip(np.round(mid / OUT_Q.scale) + OUT_Q.zero_point, -128, 127)
    np.testing.assert_allclose(y, (q_out - OUT_Q.zero_point) * OUT_Q.scale, atol=1e-6)
    assert np.max(np.abs(y - inputs)) <= (IN_Q.scale + OUT_Q.scale) / 2 + 1e-6
    # without the parameters the float feed cannot go into the int8 tensor
    plain = LiteRtBackend(coral).prepare(tmp_path / "q.tflite", tflite_manifest(batch="batch"))
    with pytest.raises(RuntimeBackendError):
        plain.run({"x": inputs})
