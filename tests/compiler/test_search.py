"""The accuracy-guarded search on a model built to break naive int8, ``--explain`` and
``--report``, through the real CLI, torch and onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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


def test_min_cosine_judges_the_worst_sample() -> None:
    from compiler.metrics import cosine, min_cosine, resolve_metric

    reference = np.tile(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), (10, 1))
    outputs = reference.copy()
    outputs[3] = [1.0, 1.0, 0.0]  # one sample 45 degrees off: cosine 0.707
    assert cosine(reference, outputs, None) == pytest.approx(1 - (1 - 0.5**0.5) / 10)
    assert min_cosine(reference, outputs, None) == pytest.approx(0.5**0.5)
    metric = resolve_metric("min_cosine", classifier=False, has_labels=False)
    assert metric.higher_is_better and metric(reference, outputs, None) == pytest.approx(0.5**0.5)


def test_keeping_nodes_in_float_stops_when_the_bound_is_out_of_reach() -> None:
    from compiler.metrics import resolve_metric
    from compiler.search import SearchSettings, _out_of_reach

    cosine = resolve_metric("min_cosine", classifier=False, has_labels=False)
    settings = SearchSettings(metric=cosine, max_exclusions=5)
    # an NPU's static QDQ of a transformer: +0.11 per node, 2 picks left, 0.40 to go
    why = _out_of_reach([0.26, 0.37, 0.54, 0.59], cosine, 0.99, settings)
    assert why == "+0.11 min_cosine per node over the last 3, 2 more would not reach 0.99"
    # dynamic int8 that gets there: slow at first, then fast enough
    assert _out_of_reach([0.9842, 0.9843, 0.9848, 0.9892], cosine, 0.99, settings) == ""
    assert _out_of_reach([0.26, 0.37], cosine, 0.99, settings) == ""  # too early to tell
    error = resolve_metric("max_abs_error", classifier=False, has_labels=False)
    falling = SearchSettings(metric=error, max_exclusions=8)
    assert _out_of_reach([0.9, 0.7, 0.5, 0.3], error, 0.05, falling) == ""
    assert _out_of_reach([0.9, 0.89, 0.88, 0.87], error, 0.05, falling).startswith("+0.01 max")


def test_dynamic_int8_keeps_a_fused_gemm_in_float(tmp_path: Path) -> None:
    """Clean-up fuses each 3-D MatMul + Add into Reshape -> Gemm -> Reshape (onnxruntime's
    MatMulAddFusion). The dynamic quantizer splits a Gemm into ``NAME_MatMul`` + Add before it
    reads its exclusions: keeping the Gemm in float must keep that layer float, the other int8.
    The attention-style activation x activation MatMul, which dynamic int8 leaves float (so
    keeping it in float changes nothing), is not ranked."""
    import onnx
    import onnxruntime as ort

    from compiler.data import Samples
    from compiler.passes.base import Artifact, Format, PassContext
    from compiler.passes.cleanup_onnx import CleanupConfig, CleanupOnnx
    from compiler.passes.quantize_dynamic import DynamicConfig, QuantizeDynamic
    from compiler.sensitivity import rank_nodes

    source = _two_dense_layers(tmp_path / "dense.onnx")
    context = PassContext(workdir=tmp_path)
    cleaned = tmp_path / "cleaned.onnx"
    CleanupOnnx(CleanupConfig()).run(Artifact(Format.ONNX, "dense", path=source), cleaned, context)
    graph = onnx.load(str(cleaned)).graph
    gemms = [n.name for n in graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 2 and "gemm_input_shape" in {i.name for i in graph.initializer}
    start = Artifact(Format.ONNX, "cleaned", path=cleaned)
    plain, kept = tmp_path / "int8.onnx", tmp_path / "int8-kept.onnx"
    QuantizeDynamic(DynamicConfig(per_channel=True)).run(start, plain, context)
    config = DynamicConfig(per_channel=True, nodes_to_exclude=(gemms[0],))
    QuantizeDynamic(config).run(start, kept, context)
    ort.InferenceSession(str(kept), providers=["CPUExecutionProvider"])
    integer = [n for n in onnx.load(str(kept)).graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == 1 and integer[0].name.startswith(gemms[1])
    x = np.random.default_rng(0).standard_normal((4, 8, 16)).astype(np.float32)
    ranked = rank_nodes(cleaned, plain, Samples.single("x", x, dynamic=False), DYNAMIC_OPS)
    assert sorted(s.node for s in ranked) == sorted(gemms)  # not the attention MatMul


DYNAMIC_OPS = frozenset({"MatMul", "Gemm"})


def test_a_layer_kept_in_float_loads_beside_onnxruntime_fusion_names(tmp_path: Path) -> None:
    """An initializer named ``gemm_input_shape`` (what clean-up's MatMulAddFusion leaves in a
    transformer) and a 3-D MatMul + Add left in float: loading fuses that pair and generates
    ``gemm_input_shape`` again ("Attempt to replace the existing tensor" in onnxruntime 1.22).
    The quantizers rename the old initializer out of the way, so the int8 model loads."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from compiler.passes.base import Artifact, Format, PassContext
    from compiler.passes.quantize_dynamic import DynamicConfig, QuantizeDynamic

    rng = np.random.default_rng(0)
    w1, b1, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((16, 16), (16,), (16, 16)))
    weights = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))]
    shape = numpy_helper.from_array(np.array([8, 16], dtype=np.int64), "gemm_input_shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="dense1/MatMul"),
        helper.make_node("Add", ["m1", "b1"], ["y"], name="dense1/Add"),
        helper.make_node("Reshape", ["x", "gemm_input_shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w2"], ["z"], name="dense2/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "fused-names",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [8, 16]),
        ],
        [*weights, shape],
    )
    source = tmp_path / "source.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    out = tmp_path / "int8.onnx"
    config = DynamicConfig(nodes_to_exclude=("dense1/MatMul",))
    QuantizeDynamic(config).run(Artifact(Format.ONNX, "s", path=source), out, PassContext(tmp_path))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, 8, 16)).astype(np.float32)
    y, z = session.run(None, {"x": x})
    assert np.allclose(y, x @ w1 + b1, atol=1e-4)  # the layer kept in float is exact
    assert np.allclose(z, x.reshape(8, 16) @ w2, atol=0.1 * np.abs(z).max())  # int8
    names = {i.name for i in onnx.load(str(out)).graph.initializer}
    assert "gemm_input_shape" not in names and "fused/gemm_input_shape" in names


def _two_dense_layers(path: Path) -> Path:
    """x (1, 8, 16) -> dense -> relu -> dense -> y, and scores = h @ h^T (no weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="dense1/MatMul"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="dense1/Add"),
        helper.make_node("Relu", ["a1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "w2"], ["m2"], name="dense2/MatMul"),
        helper.make_node("Add", ["m2", "b2"], ["y"], name="dense2/Add"),
        helper.make_node("Transpose", ["h"], ["ht"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["h", "ht"], ["scores"], name="attention/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 8, 8]),
        ],
        [weight("w1", 16, 16), weight("b1", 16), weight("w2", 16, 16), weight("b2", 16)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path
