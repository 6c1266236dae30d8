"""Pure parts of the compiler: recipes per profile, data files, source resolution, configs,
and the promise that importing the compiler CLI loads nothing heavy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compiler.data import Samples, check_shape, load_dataset
from compiler.errors import CompileError
from compiler.golden import (
    QUANTIZED_STEPS,
    choose_inputs,
    output_steps,
    tolerance,
)
from compiler.graph import GraphKind
from compiler.package import bundle_stem, prepare_directory
from compiler.passes import Format
from compiler.passes.quantize_static import (
    QuantizationError,
    StaticQdqConfig,
    quantize_static_qdq,
)
from compiler.recipes import recipe_for
from compiler.runner import HostModel
from compiler.sources import OnnxSource, TorchSource, resolve_source
from edgefleet.errors import EdgefleetError
from hardware_profiles import Precision, all_profiles, load_profile


def _names(tag: str, **kwargs: Any) -> list[str]:
    return [c.name for c in recipe_for(load_profile(tag), **kwargs).candidates]


def test_recipes_for_every_known_profile() -> None:
    expected = {
        "x86-64/avx512-vnni": ["int8-static-qdq", "fp32"],
        "raspberry-pi/4b": ["int8-static-qdq", "fp32"],
        "raspberry-pi/4b-litert": [
            "int8-full-tflite",
            "int8-dynamic-tflite",
            "fp16-tflite",
            "fp32-tflite",
        ],
        "nvidia/jetson-orin-nano": ["fp16", "int8-static-qdq", "fp32"],
        "qualcomm/hexagon-npu": ["int8-qnn-qdq", "fp16"],
        "google/coral-edgetpu": ["int8-full-tflite"],
        "arm/cortex-m7": ["int8-full-tflite"],
    }
    for profile in all_profiles():
        recipe = recipe_for(profile)
        assert [c.name for c in recipe.candidates] == expected[profile.tag], profile.tag
        for candidate in recipe.candidates:
            if candidate.pipeline.source is Format.ONNX and profile.format.value == "onnx":
                assert candidate.pipeline.problems(profile) == [], profile.tag


def test_sequence_graphs_and_explicit_dynamic_try_dynamic_int8_first() -> None:
    tag = "x86-64/avx512-vnni"
    assert _names(tag, graph=GraphKind.SEQUENCE)[0] == "int8-dynamic"
    assert _names(tag, quantization="dynamic") == ["int8-dynamic", "fp32"]
    assert _names(tag, quantization="none") == ["fp32"]
    # dynamic int8 does not run on an NPU: static QDQ stays
    assert _names("qualcomm/hexagon-npu", graph=GraphKind.SEQUENCE)[0] == "int8-qnn-qdq"


def test_int8_recipe_follows_the_profile_quantization_block() -> None:
    profile = load_profile("qualcomm/hexagon-npu")
    recipe = recipe_for(profile, seed=7, calibrate_method="percentile")
    (step,) = recipe.candidates[0].pipeline.passes
    assert isinstance(step.config, StaticQdqConfig)
    quant = profile.quantization
    assert step.config.per_channel == quant.per_channel
    assert (step.config.activations, step.config.weights) == (quant.activations, quant.weights)
    assert step.config.qnn is True
    assert (step.config.seed, step.config.calibrate_method) == (7, "percentile")


def test_fp16_records_the_gpu_provider_options() -> None:
    recipe = recipe_for(load_profile("nvidia/jetson-orin-nano"))
    assert recipe.precision is Precision.FP16
    (step,) = recipe.candidates[0].pipeline.passes
    options = step.config.model_dump()["provider_options"]
    assert set(options) == {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
    assert options["TensorrtExecutionProvider"]["trt_fp16_enable"] == "1"
    assert step.config.model_dump()["keep_io_types"] is True


@pytest.mark.usefixtures("no_tool_envs")
def test_tflite_recipe_names_what_to_install() -> None:
    profile = load_profile("google/coral-edgetpu")
    recipe = recipe_for(profile, source=Format.TORCH)
    assert recipe.float_pipeline is not None
    assert [p.name for p in recipe.float_pipeline.passes] == ["torch_to_tflite"]
    assert [p.name for p in recipe.candidates[0].pipeline.passes] == ["quantize_tflite"]
    assert recipe.candidates[0].pipeline.problems(profile) == []  # a compiler dependency
    (problem,) = recipe.float_pipeline.problems(profile)
    assert "pass 'torch_to_tflite'" in problem
    assert "'edgefleet tools setup litert-torch'" in problem
    from_onnx = recipe_for(profile, source=Format.ONNX).float_pipeline
    assert from_onnx is not None and "onnx2tf" in from_onnx.problems(profile)[0]
    assert recipe_for(profile, source=Format.TFLITE).float_pipeline is None  # the user's own


def test_tflite_cpu_recipe_follows_the_quantization_mode() -> None:
    tag = "raspberry-pi/4b-litert"
    assert _names(tag, source=Format.TFLITE, quantization="static") == [
        "int8-full-tflite",
        "fp16-tflite",
        "fp32-tflite",
    ]
    assert _names(tag, quantization="dynamic")[0] == "int8-dynamic-tflite"
    assert _names(tag, quantization="none") == ["fp16-tflite", "fp32-tflite"]
    recipe = recipe_for(load_profile(tag))
    # float16 weights are a size variant (expanded to float32 at load on this CPU): only the
    # int8 candidates must beat fp32 on the host
    assert [c.faster_than_fp32 for c in recipe.candidates] == [True, True, False, True]
    # an accelerator that only takes int8 gets no float variant
    assert _names("google/coral-edgetpu", quantization="none") == ["fp32-tflite"]
    assert _names("google/coral-edgetpu", quantization="dynamic") == ["int8-full-tflite"]


def test_pass_config_digest_is_sha256_of_canonical_json() -> None:
    config = StaticQdqConfig(per_channel=False, seed=3)
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert config.digest() == hashlib.sha256(canonical.encode()).hexdigest()
    assert config.digest() != StaticQdqConfig(per_channel=False, seed=4).digest()
    with pytest.raises(ValueError, match="extra"):
        StaticQdqConfig(per_chanel=True)  # type: ignore[call-arg]


def test_dataset_from_npz_uses_x_and_y(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, y=np.arange(4), x=np.ones((4, 1, 2, 2), dtype=np.float64))
    data = load_dataset(path, "eval")
    assert data.x.dtype == np.float32 and data.x.shape == (4, 1, 2, 2)
    assert data.y is not None and data.y.tolist() == [0, 1, 2, 3]
    assert len(data.sha256) == 64


def test_dataset_from_npz_without_x_takes_the_first_array(tmp_path: Path) -> None:
    path = tmp_path / "calibration.npz"
    np.savez(path, images=np.zeros((3, 5), dtype=np.uint8))
    data = load_dataset(path, "calibration")
    assert data.x.shape == (3, 5) and data.y is None


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((4, 2)), "y": np.zeros(3, dtype=np.int64)}, "labels 'y' must be 4"),
        ({"x": np.array(["a", "b"])}, "expected numbers"),
        ({"x": np.zeros((0, 2))}, "holds no samples"),
    ],
)
def test_bad_datasets_are_named(tmp_path: Path, arrays: dict[str, Any], match: str) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(CompileError, match=match) as caught:
        load_dataset(path, "eval")
    assert str(path) in str(caught.value)


def test_dataset_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="calibration data file not found"):
        load_dataset(tmp_path / "missing.npy", "calibration")
    text = tmp_path / "data.csv"
    text.write_text("1,2\n")
    with pytest.raises(CompileError, match=r"must be a \.npy or \.npz"):
        load_dataset(text, "calibration")
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not numpy")
    with pytest.raises(CompileError, match="cannot read calibration data"):
        load_dataset(broken, "calibration")


def test_shape_check_accepts_dynamic_axes_and_names_both_shapes(tmp_path: Path) -> None:
    path = tmp_path / "c.npy"
    np.save(path, np.zeros((5, 3, 8, 8), dtype=np.float32))
    data = load_dataset(path, "calibration")
    check_shape(data, "x", ("batch", 3, "h", "w"))
    with pytest.raises(CompileError, match=r"\(5, 3, 8, 8\).*'x' expects \(N, 1, 8, 8\)"):
        check_shape(data, "x", ("batch", 1, 8, 8))


def test_resolve_source(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    assert isinstance(resolve_source(str(model)), OnnxSource)
    source = resolve_source("compiler.examples.digits:trained_cnn")
    assert isinstance(source, TorchSource)
    assert (source.module, source.factory) == ("compiler.examples.digits", "trained_cnn")
    for bad, reason in [
        (str(tmp_path / "absent.onnx"), "no such ONNX file"),
        (str(tmp_path / "absent.tflite"), "no such TFLite file"),
        (str(tmp_path), "a directory"),
        ("not a model", "neither an existing ONNX file"),
        ("pkg.mod:", "neither"),
    ]:
        with pytest.raises(CompileError, match=reason):
            resolve_source(bad)


def test_golden_inputs_include_the_samples_the_artifact_gets_most_wrong() -> None:
    x = Samples.single("x", np.arange(100, dtype=np.float32).reshape(100, 1), dynamic=True)
    float_outputs = np.zeros((100, 3), dtype=np.float32)
    outputs = float_outputs.copy()
    outputs[37, 1], outputs[71, 2], outputs[5, 0] = 2.0, -3.0, 1.0  # the third is left out
    picked = choose_inputs(x, {"y": outputs}, {"y": float_outputs}, 8).first[:, 0]
    assert len(picked) == 8 and list(picked) == sorted(set(picked))
    assert {37, 71} <= set(picked) and 5 not in picked
    assert picked[0] == 0 and picked[-1] == 99  # the other six spread over the data
    assert len(choose_inputs(x.take(np.arange(3)), {}, {}, 8)) == 3


def _write_graph(path: Path, *, dequantized: bool) -> HostModel:
    """``y = DequantizeLinear(QuantizeLinear(x))`` at scale 0.1, optionally followed by a
    float ``Relu`` (then the output is no longer a quantized one)."""
    from onnx import TensorProto, helper, numpy_helper, save

    scale = numpy_helper.from_array(np.asarray(0.1, np.float32), "scale")
    zero = numpy_helper.from_array(np.asarray(0, np.uint8), "zero")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y" if dequantized else "d"]),
    ]
    if not dequantized:
        nodes.append(helper.make_node("Relu", ["d"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [scale, zero],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return HostModel(path)


def test_golden_tolerance_is_output_steps_for_a_dequantized_onnx_output(tmp_path: Path) -> None:
    outputs = {"y": np.array([[20.0, 5.0]], dtype=np.float32)}
    quantized = _write_graph(tmp_path / "qdq.onnx", dequantized=True)
    assert output_steps(quantized) == {"y": pytest.approx(0.1)}
    assert tolerance(quantized, outputs, Precision.INT8) == pytest.approx(QUANTIZED_STEPS * 0.1)
    relu = _write_graph(tmp_path / "relu.onnx", dequantized=False)
    assert output_steps(relu) == {}
    assert tolerance(relu, outputs, Precision.INT8) == pytest.approx(5e-2 * 20.0)
    assert tolerance(relu, outputs, Precision.FP16) == pytest.approx(1e-2 * 20.0)
    small = {"y": np.array([[0.2, 0.05]], dtype=np.float32)}  # below 1: the floor of m
    assert tolerance(relu, small, Precision.FP32) == pytest.approx(1e-3)


def test_bundle_directory_replaces_a_bundle_but_not_other_files(tmp_path: Path) -> None:
    stem = bundle_stem("digits", "1.0.0", "raspberry-pi/4b")
    assert stem == "digits-1.0.0-raspberry-pi_4b"
    old = prepare_directory(tmp_path, stem)
    (old / "manifest.json").write_text("{}")
    (old / "stale.bin").write_bytes(b"x")
    assert list(prepare_directory(tmp_path, stem).iterdir()) == []
    (old / "precious.txt").write_text("mine")
    with pytest.raises(CompileError, match="not a bundle"):
        prepare_directory(tmp_path, stem)
    assert (old / "precious.txt").read_text() == "mine"


def test_compile_error_is_an_edgefleet_error() -> None:
    assert issubclass(CompileError, EdgefleetError)


def test_importing_the_compiler_cli_loads_nothing_heavy() -> None:
    code = (
        "import sys, compiler, compiler.cli, compiler.pipeline\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'onnx', 'onnxruntime', 'onnxscript', 'sklearn'})\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


@pytest.mark.integration
def test_quantizer_failure_is_a_quantization_error(float_onnx: Path, tmp_path: Path) -> None:
    """Calibration samples the model cannot take make onnxruntime fail inside the quantizer;
    that surfaces as QuantizationError (the search then tries the next candidate)."""
    wrong = np.zeros((4, 1, 5, 5), dtype=np.float32)
    with pytest.raises(QuantizationError, match="static QDQ quantization failed"):
        quantize_static_qdq(float_onnx, tmp_path / "int8.onnx", wrong, StaticQdqConfig())
