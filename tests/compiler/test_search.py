"""The accuracy-guarded search on a model built to break naive int8, ``--explain`` and
``--report``, through the real CLI, torch and onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefleet.bundle import verify_bundle
from tests.compiler.conftest import Keys

pytestmark = pytest.mark.integration

OUTLIER = "compiler.examples.outlier:outlier_mlp"
NPU = "qualcomm/hexagon-npu"
CPU = "x86-64/avx512-vnni"


@dataclass(frozen=True)
class OutlierRun:
    out: Path
    report: str
    stdout: str


@pytest.fixture(scope="module")
def outlier_run(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> OutlierRun:
    from compiler.examples.outlier import write_datasets
    from edgefleet.cli import app

    root = tmp_path_factory.mktemp("outlier")
    calibration, evaluation = write_datasets(root / "data")
    out, report = root / "out", root / "report.md"
    args = ["compile", OUTLIER, "--profile", NPU, "--profile", CPU]
    args += ["--calibration", str(calibration), "--eval", str(evaluation)]
    args += ["--metric", "top1_agreement", "--max-drop", "0.02", "--report", str(report)]
    args += [
        "--out",
        str(out),
        "--key",
        str(keys.private),
        "--name",
        "outlier",
        "--version",
        "1.0.0",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return OutlierRun(out=out, report=report.read_text(), stdout=result.stdout)


def test_outlier_layer_is_kept_in_float_and_the_bound_holds(
    outlier_run: OutlierRun, keys: Keys
) -> None:
    bundle = verify_bundle(outlier_run.out / "outlier-1.0.0-qualcomm_hexagon-npu", [keys.verify])
    evidence = bundle.manifest.evidence
    assert bundle.manifest.precision == "int8"
    # naive int8 broke the bound: the first candidate is rejected
    naive = evidence.candidates[0]
    assert naive.name == "int8-qnn-qdq" and not naive.accepted
    assert naive.metric_value is not None and naive.metric_value < 0.5
    assert "next: keep node_linear_2 in float" in naive.reason
    # the head (whose input has the 1000x channel) stays in float, and that is enough
    assert "node_linear_2" in evidence.excluded_nodes
    assert "node_linear_1" not in evidence.excluded_nodes
    assert evidence.top1_agreement is not None and evidence.top1_agreement >= 0.98
    assert evidence.float_size_bytes is not None
    assert evidence.size_bytes / evidence.float_size_bytes < 0.35
    assert "node_linear_2" in evidence.selection
    assert "node_linear_2" in outlier_run.report
    assert f"## {NPU}: int8" in outlier_run.report


def test_cpu_profile_rejects_a_quantized_model_slower_than_fp32_or_ships_a_faster_one(
    outlier_run: OutlierRun, keys: Keys
) -> None:
    bundle = verify_bundle(outlier_run.out / "outlier-1.0.0-x86-64_avx512-vnni", [keys.verify])
    evidence = bundle.manifest.evidence
    names = [c.name for c in evidence.candidates]
    assert names[0] == "int8-static-qdq"
    chosen = next(c for c in evidence.candidates if c.accepted)
    if chosen.precision == "int8":
        assert "fp32 host time" in evidence.selection
    else:  # the int8 candidate within the bound was not faster than fp32 on this host
        slower = [c for c in evidence.candidates if "not faster than fp32" in c.reason]
        assert slower and slower[0].precision == "int8" and not slower[0].accepted
        assert "not faster than fp32 on the host" in outlier_run.report


@pytest.mark.usefixtures("no_tool_envs")
def test_explain_prints_the_plan_without_running(tmp_path: Path) -> None:
    from edgefleet.cli import app

    args = [
        "compile",
        OUTLIER,
        "-p",
        CPU,
        "-p",
        "google/coral-edgetpu",
        "-p",
        "nvidia/jetson-orin-nano",
    ]
    result = CliRunner().invoke(app, [*args, "--explain", "--calibrate-method", "entropy"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "export_onnx (torch -> onnx)" in text and "cleanup_onnx (onnx -> onnx)" in text
    assert '"calibrate_method"="entropy"' in text
    assert "1. int8-static-qdq [int8]" in text and "2. fp32 [fp32]" in text
    assert "convert_fp16 (onnx -> onnx-fp16)" in text and "trt_fp16_enable" in text
    assert "quantize_tflite (tflite -> tflite-int8)" in text
    assert "needs the 'litert-torch' tool environment" in text
    assert "edgefleet tools setup litert-torch" in text
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def hardmax_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny ONNX model with Hardmax, an op neither the Hexagon NPU nor the Jetson GPU lists."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    root = tmp_path_factory.mktemp("hardmax")
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4).flatten().tolist())
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
            helper.make_node("Hardmax", ["h"], ["y"], name="hardmax", axis=-1),
        ],
        "hardmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(root / "hardmax.onnx"))
    np.save(root / "calibration.npy", np.random.default_rng(0).random((16, 4), dtype=np.float32))
    return root / "hardmax.onnx", root / "calibration.npy"


def _compile_hardmax(model: tuple[Path, Path], tag: str, out: Path, keys: Keys) -> Any:
    from compiler.pipeline import CompileRequest, compile_model

    request = CompileRequest(
        model=str(model[0]),
        profiles=[tag],
        calibration=model[1],
        out=out,
        key=keys.private,
        name="hardmax",
        version="1.0.0",
        quantization="none",
    )
    return compile_model(request)


def test_ops_the_npu_cannot_run_fail_the_compile_when_fallback_is_forbidden(
    hardmax_model: tuple[Path, Path], keys: Keys, tmp_path: Path
) -> None:
    from compiler.errors import CompileError

    with pytest.raises(
        CompileError,
        match=r"qualcomm/hexagon-npu: op Hardmax cannot run on the "
        r"Hexagon NPU \(HTP\) and the profile forbids CPU fallback",
    ):
        _compile_hardmax(hardmax_model, NPU, tmp_path / "out", keys)
    assert not (tmp_path / "out").exists()


def test_ops_falling_back_to_the_cpu_are_listed_when_allowed(
    hardmax_model: tuple[Path, Path], keys: Keys, tmp_path: Path
) -> None:
    result = _compile_hardmax(hardmax_model, "nvidia/jetson-orin-nano", tmp_path, keys)
    (built,) = result.bundles
    assert built.bundle.manifest.evidence.fallback_ops == ("Hardmax",)
    assert built.batch_ms is not None and built.batch_ms > 0  # batch-N time measured on host
