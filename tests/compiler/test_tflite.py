"""The TFLite route for real: the digits CNN through litert-torch (in its tool environment) and
ai-edge-quantizer, for the Coral and Cortex-M7 profiles, run in the LiteRT interpreter and
scored against the float PyTorch model on the test split.

Skips only when the litert-torch tool environment is absent (``make tools`` creates it; CI
does); the ONNX route skips without the onnx2tf one (``edgefleet tools setup onnx2tf``: TensorFlow,
about 2.6 GB, not part of CI's set-up).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from compiler import budget
from compiler.data import load_dataset
from compiler.errors import CompileError
from compiler.graph import fallback_ops
from compiler.litert_host import LiteRtModel
from compiler.passes.base import Artifact, Format, PassContext
from compiler.passes.cache import PassCache
from compiler.pipeline import CompileRequest, artifact_ops, compile_model
from compiler.recipes import recipe_for
from compiler.toolenv import LITERT_TORCH, ONNX2TF
from edgefleet.bundle import VerifiedBundle, verify_bundle
from hardware_profiles import load_profile
from tests.compiler.conftest import DIGITS, DigitsData, Keys, digits_pass_context

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not LITERT_TORCH.ready(), reason=LITERT_TORCH.hint()),
]

PROFILES = ("google/coral-edgetpu", "arm/cortex-m7")


@dataclass(frozen=True)
class Built:
    int8: Artifact
    float_tflite: Artifact
    cached: bool


@pytest.fixture(scope="module")
def float_accuracy() -> float:
    import torch

    from compiler.examples.digits import load_split, trained_cnn

    _, x_test, _, y_test = load_split()
    model, _ = trained_cnn()
    with torch.no_grad():
        logits = model(torch.from_numpy(x_test)).numpy()
    return float(np.mean(logits.argmax(axis=1) == y_test))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, digits_data: DigitsData) -> dict[str, Built]:
    """Each profile's recipe run from the PyTorch module; the second profile's identical
    passes come from the cache."""
    model, context = digits_pass_context(tmp_path_factory, digits_data, "tflite-work")
    cache = PassCache(tmp_path_factory.mktemp("tflite-cache"))
    source = Artifact(Format.TORCH, model.sha256())
    found: dict[str, Built] = {}
    for tag in PROFILES:
        profile = load_profile(tag)
        recipe = recipe_for(profile, source=Format.TORCH)
        (plan,) = recipe.candidates  # int8 only: neither profile lists a float precision
        assert recipe.float_pipeline is not None
        recipe.float_pipeline.check(profile)
        plan.pipeline.check(profile)
        float_tflite = recipe.float_pipeline.run(source, context, cache)
        int8 = plan.pipeline.run(float_tflite, context, cache)
        assert int8.parent is float_tflite
        found[tag] = Built(int8, float_tflite, int8.cached)
    return found


@pytest.mark.parametrize("tag", PROFILES)
def test_full_int8_tflite_runs_in_litert_within_one_point_of_fp32(
    built: dict[str, Built], float_accuracy: float, tag: str
) -> None:
    from compiler.examples.digits import load_split

    artifact = built[tag].int8
    assert artifact.format is Format.TFLITE_INT8 and artifact.file.suffix == ".tflite"
    assert [r.name for r in artifact.lineage()] == ["torch_to_tflite", "quantize_tflite"]
    host = LiteRtModel(artifact.file)
    assert host.input_dtype == np.int8  # int8 input and output, as the profiles ask
    _, x_test, _, y_test = load_split()
    accuracy = float(np.mean(host.run(x_test).argmax(axis=1) == y_test))
    assert accuracy >= float_accuracy - 0.01, (accuracy, float_accuracy)


def test_every_activation_is_int8(built: dict[str, Built]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(built["arm/cortex-m7"].int8.file))
    graph = budget.read_tflite(built["arm/cortex-m7"].int8.file)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    kinds = {np.dtype(details[index]["dtype"]).name for index in graph.sizes}
    assert kinds == {"int8"}


def test_int8_is_under_thirty_percent_of_float_tflite(built: dict[str, Built]) -> None:
    for item in built.values():
        ratio = item.int8.file.stat().st_size / item.float_tflite.file.stat().st_size
        assert ratio <= 0.30, ratio


def test_float_tflite_matches_pytorch(built: dict[str, Built]) -> None:
    import torch

    from compiler.examples.digits import load_split, trained_cnn

    _, x_test, _, _ = load_split()
    model, _ = trained_cnn()
    with torch.no_grad():
        expected = model(torch.from_numpy(x_test[:64])).numpy()
    got = LiteRtModel(built["google/coral-edgetpu"].float_tflite.file).run(x_test[:64])
    assert np.max(np.abs(got - expected)) < 1e-4


def test_second_profile_reuses_the_cached_conversion(built: dict[str, Built]) -> None:
    first, second = (built[tag] for tag in PROFILES)
    assert not first.cached and second.cached
    assert second.int8.digest == first.int8.digest


def test_cortex_m7_budget_estimate_fits(built: dict[str, Built]) -> None:
    profile = load_profile("arm/cortex-m7")
    estimate = budget.check(profile, built["arm/cortex-m7"].int8.file)
    assert estimate is not None
    # 32 x 8 x 8 int8 after the first convolution and 32 x 4 x 4 after the pooling: the peak
    assert estimate.arena_bytes == 2048 + 512 and "MAX_POOL_2D" in estimate.peak_op
    assert estimate.flash_bytes == built["arm/cortex-m7"].int8.file.stat().st_size


def test_a_tool_failure_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match=r"^litert-torch failed: \w+Error: ") as caught:
        LITERT_TORCH.run_script(
            "litert_convert.py",
            ["--program", str(tmp_path / "missing.pt2"), "--out", str(tmp_path / "m.tflite")],
            timeout_s=300,
        )
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(not ONNX2TF.ready(), reason=ONNX2TF.hint())
def test_onnx_route_through_onnx2tf(
    tmp_path: Path, float_onnx: Path, digits_data: DigitsData, float_accuracy: float
) -> None:
    """An ONNX model -> onnx2tf (its own environment, NCHW input kept) -> full int8."""
    from compiler.examples.digits import load_split

    profile = load_profile("arm/cortex-m7")
    recipe = recipe_for(profile, source=Format.ONNX)
    (plan,) = recipe.candidates
    assert recipe.float_pipeline is not None
    context = PassContext(
        workdir=tmp_path, calibration=load_dataset(digits_data.calibration, "calibration")
    )
    source = Artifact(Format.ONNX, "digits-onnx", path=float_onnx)
    float_tflite = recipe.float_pipeline.run(source, context, PassCache(None))
    int8 = plan.pipeline.run(float_tflite, context, PassCache(None))
    assert [r.name for r in int8.lineage()] == ["onnx_to_tflite", "quantize_tflite"]
    _, x_test, _, y_test = load_split()
    host = LiteRtModel(int8.file)
    assert host.input_dtype == np.int8
    accuracy = float(np.mean(host.run(x_test).argmax(axis=1) == y_test))
    assert accuracy >= float_accuracy - 0.01, (accuracy, float_accuracy)


@pytest.fixture(scope="module")
def tflite_bundles(
    tmp_path_factory: pytest.TempPathFactory, digits_data: DigitsData, keys: Keys
) -> dict[str, VerifiedBundle]:
    """``compile_model`` for the Coral and Cortex-M7 profiles: signed TFLite bundles."""
    out = tmp_path_factory.mktemp("tflite-bundles")
    result = compile_model(
        CompileRequest(
            model=DIGITS,
            profiles=PROFILES,
            calibration=digits_data.calibration,
            eval_data=digits_data.evaluation,
            out=out,
            key=keys.private,
            name="digits",
            version="1.0.0",
        )
    )
    assert [b.profile for b in result.bundles] == list(PROFILES) and not result.skipped
    return {b.profile: verify_bundle(b.bundle.directory, [keys.verify]) for b in result.bundles}


@pytest.mark.parametrize("tag", PROFILES)
def test_compile_packs_a_signed_full_int8_tflite_bundle(
    tflite_bundles: dict[str, VerifiedBundle], tag: str
) -> None:
    manifest = tflite_bundles[tag].manifest
    assert manifest.format == "tflite" and manifest.precision == "int8"
    assert manifest.model_file.endswith(".tflite")
    ((spec,), (out,)) = manifest.interface.inputs, manifest.interface.outputs
    # int8 tensors, declared float32 with the scale and zero point the runtime applies
    assert spec.dtype == "float32" and spec.quantization is not None and spec.shape[0] == 1
    assert out.dtype == "float32" and out.quantization is not None and out.shape == (1, 10)
    evidence = manifest.evidence
    (chosen,) = [c for c in evidence.candidates if c.accepted]
    assert chosen.name == "int8-full-tflite" and chosen.metric_value is not None
    assert chosen.metric_value >= 0.95 and evidence.host_latency_ms is not None
    # TFLite op names, against the profile's TFLite op list (the layout TRANSPOSE litert-torch
    # adds in front is not an Edge TPU op: it is listed, and runs on the CPU)
    ops = artifact_ops(tflite_bundles[tag].model_path)
    assert "CONV_2D" in ops and evidence.fallback_ops == fallback_ops(ops, load_profile(tag))
    assert "CONV_2D" not in evidence.fallback_ops
    assert [p.name for p in manifest.lineage.passes][-2:] == ["torch_to_tflite", "quantize_tflite"]


def test_cortex_m7_bundle_records_the_memory_estimates(
    tflite_bundles: dict[str, VerifiedBundle],
) -> None:
    m7 = tflite_bundles["arm/cortex-m7"]
    estimate = budget.estimate_tflite(m7.model_path)
    evidence = m7.manifest.evidence
    assert evidence.tensor_arena_bytes == estimate.arena_bytes > 0
    assert evidence.flash_bytes == estimate.flash_bytes == evidence.size_bytes
    coral = tflite_bundles["google/coral-edgetpu"].manifest.evidence
    assert coral.tensor_arena_bytes is None  # not a microcontroller


@pytest.mark.parametrize("tag", PROFILES)
def test_agent_litert_runtime_reproduces_the_golden_outputs(
    tflite_bundles: dict[str, VerifiedBundle], tag: str
) -> None:
    """The agent's LiteRT backend, fed the golden float inputs, quantizes them with the
    manifest's parameters and dequantizes its outputs: it matches what the compiler stored."""
    from edge_agent.runtime.litert import LiteRtBackend
    from edge_agent.serving import ServedModel
    from edge_agent.update.golden import run_golden

    verified = tflite_bundles[tag]
    manifest = verified.manifest
    prepared = LiteRtBackend(load_profile(tag)).prepare(verified.model_path, manifest)
    with np.load(verified.golden_path) as data:
        inputs, expected = data["inputs"], data["outputs"]
    assert inputs.dtype == np.float32 and expected.dtype == np.float32
    (got,) = prepared.run({manifest.interface.inputs[0].name: inputs})
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)  # the same kernels, the same int8 rounding
    served = ServedModel(
        manifest=manifest,
        prepared=prepared,
        artifact_sha256=manifest.files[manifest.model_file].sha256,
        deployment_id="d",
        path=verified.path,
    )
    run_golden(served, verified)  # the agent's own check after install passes


@pytest.mark.parametrize("tag", PROFILES)
def test_golden_tolerance_is_output_steps_and_catches_a_float_runtime(
    tflite_bundles: dict[str, VerifiedBundle], tag: str
) -> None:
    """The stored outputs are the artifact's own in LiteRT: the tolerance covers a device's
    int8 rounding (up to two steps of the output scale), not the quantization error, so a runtime
    that ran the float model instead (or dequantized wrongly) fails the check."""
    from compiler.golden import QUANTIZED_STEPS

    verified = tflite_bundles[tag]
    manifest = verified.manifest
    (out,) = manifest.interface.outputs
    assert out.quantization is not None
    assert manifest.golden.atol == pytest.approx(QUANTIZED_STEPS * out.quantization.scale)
    assert manifest.golden.atol < 1.0
    with np.load(verified.golden_path) as data:
        inputs, expected = data["inputs"], data["outputs"]
    import torch

    from compiler.examples.digits import trained_cnn

    model, _ = trained_cnn()
    with torch.no_grad():
        float_outputs = model(torch.from_numpy(inputs)).numpy()
    assert not np.allclose(float_outputs, expected, atol=manifest.golden.atol, rtol=0.0)
    shifted = expected + 3 * out.quantization.scale  # a zero point off by three
    assert not np.allclose(shifted, expected, atol=manifest.golden.atol, rtol=0.0)


def test_an_mcu_model_over_the_arena_budget_fails_the_compile_in_one_line(
    tflite_bundles: dict[str, VerifiedBundle],
) -> None:
    m7 = load_profile("arm/cortex-m7")
    tight = replace(m7, budgets=replace(m7.budgets, max_arena_bytes=1024))
    with pytest.raises(CompileError, match=r"^arm/cortex-m7: tensor arena estimate \d+ bytes"):
        budget.check(tight, tflite_bundles["arm/cortex-m7"].model_path)
