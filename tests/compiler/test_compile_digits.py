"""The acceptance of ``edgefleet compile`` on the digits CNN: signed int8 bundles at most 0.35x
the fp32 size that agree with fp32 on at least 99% of the test split, golden samples that
reproduce, honest lineage, the fp32 fallback and the TFLite skip."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import edgefleet
from compiler.pipeline import CompileRequest, compile_model
from edge_agent.errors import UpdateError
from edge_agent.runtime.ort import OnnxRuntimeBackend
from edge_agent.serving import ServedModel
from edge_agent.update.golden import run_golden
from edgefleet.bundle import (
    GOLDEN_FILE,
    Manifest,
    VerifiedBundle,
    load_signing_key,
    seal_bundle,
    sha256_file,
    unpack_bundle,
    verify_bundle,
)
from hardware_profiles import load_profile
from tests.compiler.conftest import (
    FALLBACK_PROFILE,
    INT8_PROFILES,
    TFLITE_PROFILE,
    Compiled,
    DigitsData,
    Keys,
)

pytestmark = pytest.mark.integration


def _verified(compiled: Compiled, tag: str, keys: Keys) -> VerifiedBundle:
    return verify_bundle(compiled.bundle(tag), [keys.verify])


@pytest.mark.parametrize("tag", INT8_PROFILES)
def test_int8_bundle_is_small_and_agrees_with_fp32(
    digits_compiled: Compiled, keys: Keys, tag: str
) -> None:
    bundle = _verified(digits_compiled, tag, keys)
    manifest = bundle.manifest
    evidence = manifest.evidence
    assert (manifest.profile, manifest.precision, manifest.format) == (tag, "int8", "onnx")
    assert evidence.float_size_bytes is not None and evidence.top1_agreement is not None
    assert evidence.size_bytes == bundle.model_path.stat().st_size
    assert evidence.size_bytes / evidence.float_size_bytes <= 0.35
    assert evidence.top1_agreement >= 0.99
    assert evidence.accuracy_delta is not None and evidence.accuracy_delta >= -0.01
    assert evidence.max_abs_error is not None and 0 < evidence.max_abs_error < 5
    assert evidence.host_latency_ms is not None and 0 < evidence.host_latency_ms < 50


def test_tar_beside_each_bundle_verifies(
    digits_compiled: Compiled, keys: Keys, tmp_path: Path
) -> None:
    for tag in (*INT8_PROFILES, FALLBACK_PROFILE):
        tar = digits_compiled.bundle(tag).with_name(digits_compiled.bundle(tag).name + ".tar")
        unpacked = unpack_bundle(tar, tmp_path / tag.replace("/", "_"))
        assert verify_bundle(unpacked, [keys.verify]).manifest.profile == tag


@pytest.mark.parametrize("tag", [*INT8_PROFILES, FALLBACK_PROFILE])
def test_golden_samples_are_the_artifacts_own_outputs(
    digits_compiled: Compiled, keys: Keys, tag: str
) -> None:
    bundle = _verified(digits_compiled, tag, keys)
    with np.load(bundle.golden_path) as golden:
        assert sorted(golden.files) == ["inputs", "outputs"]
        inputs, outputs = golden["inputs"], golden["outputs"]
    assert inputs.shape == (8, 1, 8, 8) and inputs.dtype == np.float32
    assert outputs.shape == (8, 10) and outputs.dtype == np.float32
    assert bundle.manifest.golden.count == 8
    served = _served(bundle)  # the device's runtime: the agent's backend for the profile
    actual = np.concatenate([served.run_examples([x])[0][0][np.newaxis] for x in inputs])
    np.testing.assert_allclose(actual, outputs, atol=1e-5, rtol=0)
    assert np.allclose(actual, outputs, atol=bundle.manifest.golden.atol, rtol=0)


def _float_outputs(inputs: np.ndarray) -> np.ndarray:
    """The trained float CNN's outputs (torch), what a device computing in float would give."""
    import torch

    from compiler.examples.digits import trained_cnn

    model, _ = trained_cnn()
    with torch.no_grad():
        outputs: np.ndarray = model.eval()(torch.from_numpy(inputs)).numpy()
    return outputs


def _output_step(bundle: VerifiedBundle) -> float:
    """The scale of the ``DequantizeLinear`` the int8 graph's output comes out of."""
    graph = onnx.load(str(bundle.model_path)).graph
    (last,) = [n for n in graph.node if graph.output[0].name in n.output]
    assert last.op_type == "DequantizeLinear"
    (scale,) = [i for i in graph.initializer if i.name == last.input[1]]
    return float(onnx.numpy_helper.to_array(scale))


@pytest.mark.parametrize("tag", INT8_PROFILES)
def test_int8_golden_tolerance_is_output_steps_and_catches_a_float_runtime(
    digits_compiled: Compiled, keys: Keys, tag: str
) -> None:
    """The tolerance is a few steps of the output's dequantization scale (a device's int8
    rounding), not the quantization error: a device computing the float model instead fails on
    the golden samples, which include those where the artifact and the float model differ
    most (the old tolerance, at least that error, let it pass)."""
    from compiler.golden import QUANTIZED_STEPS

    bundle = _verified(digits_compiled, tag, keys)
    with np.load(bundle.golden_path) as golden:
        inputs, outputs = golden["inputs"], golden["outputs"]
    atol = bundle.manifest.golden.atol
    step = _output_step(bundle)
    assert atol == pytest.approx(QUANTIZED_STEPS * step)
    assert bundle.manifest.evidence.max_abs_error is not None
    assert atol < bundle.manifest.evidence.max_abs_error / 3
    float_outputs = _float_outputs(inputs)
    assert not np.allclose(float_outputs, outputs, atol=atol, rtol=0)  # a float device fails
    assert np.allclose(outputs + 2 * step, outputs, atol=atol, rtol=0)  # 2 steps of rounding pass
    assert not np.allclose(outputs + 3 * step, outputs, atol=atol, rtol=0)
    wrong = np.roll(outputs, 1, axis=1)  # another class's logits: a broken device
    assert not np.allclose(wrong, outputs, atol=atol)


def _served(bundle: VerifiedBundle) -> ServedModel:
    """The bundle prepared by the agent's own onnxruntime backend for its profile."""
    manifest = bundle.manifest
    prepared = OnnxRuntimeBackend(load_profile(manifest.profile)).prepare(
        bundle.model_path, manifest
    )
    return ServedModel(
        manifest=manifest,
        prepared=prepared,
        artifact_sha256=manifest.files[manifest.model_file].sha256,
        deployment_id="d",
        path=bundle.path,
    )


def test_agent_refuses_a_bundle_whose_golden_outputs_are_the_float_models(
    digits_compiled: Compiled, keys: Keys, tmp_path: Path
) -> None:
    """The agent's check on a correct runtime passes the bundle as compiled; re-signed with
    the float model's outputs as its golden outputs (what a device silently running the float
    model, or a wrong runtime, would match), the same runtime is refused in one clear line."""
    private = load_signing_key(keys.private)
    bundle = _verified(digits_compiled, INT8_PROFILES[0], keys)
    run_golden(_served(bundle), bundle)  # the artifact, run correctly, passes

    forged = tmp_path / "float-golden"
    shutil.copytree(bundle.path, forged)
    with np.load(bundle.golden_path) as golden:
        inputs = golden["inputs"]
    np.savez(forged / GOLDEN_FILE, inputs=inputs, outputs=_float_outputs(inputs))
    seal_bundle(forged, bundle.manifest, private)
    verified = verify_bundle(forged, [keys.verify])
    with pytest.raises(UpdateError) as caught:
        run_golden(_served(verified), verified)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("golden.npz: sample ")
    assert "differs from the expected output" in message
    assert f"atol {bundle.manifest.golden.atol:g}" in message


def test_interface_and_lineage(
    digits_compiled: Compiled, keys: Keys, digits_data: DigitsData
) -> None:
    manifest = _verified(digits_compiled, INT8_PROFILES[0], keys).manifest
    (inp,), (out,) = manifest.interface.inputs, manifest.interface.outputs
    assert (inp.name, inp.dtype, inp.shape) == ("x", "float32", ("batch", 1, 8, 8))
    assert (out.dtype, out.shape) == ("float32", ("batch", 10))
    lineage = manifest.lineage
    assert lineage.calibration_data_sha256 == sha256_file(digits_data.calibration)
    assert lineage.eval_data_sha256 == sha256_file(digits_data.evaluation)
    assert lineage.compiler_version == edgefleet.__version__
    assert lineage.seed == 0
    assert [p.name for p in lineage.passes] == [
        "export_onnx",
        "cleanup_onnx",
        "quantize_static_qdq",
    ]
    for record in lineage.passes:
        canonical = json.dumps(record.config, sort_keys=True, separators=(",", ":")).encode()
        assert record.config_digest == hashlib.sha256(canonical).hexdigest()
    quantize = lineage.passes[2].config
    assert quantize["per_channel"] is True
    assert (quantize["activations"], quantize["weights"]) == ("uint8", "int8")
    same_source = _verified(digits_compiled, INT8_PROFILES[1], keys).manifest.lineage
    assert same_source.source_model_sha256 == lineage.source_model_sha256


def test_gpu_profile_gets_fp16_with_provider_options(digits_compiled: Compiled, keys: Keys) -> None:
    manifest: Manifest = _verified(digits_compiled, FALLBACK_PROFILE, keys).manifest
    assert manifest.precision == "fp16"
    evidence = manifest.evidence
    assert evidence.float_size_bytes is not None
    assert evidence.size_bytes / evidence.float_size_bytes < 0.6
    assert evidence.top1_agreement is not None and evidence.top1_agreement >= 0.99
    assert evidence.max_abs_error is not None and evidence.max_abs_error < 0.05
    assert [p.name for p in manifest.lineage.passes] == [
        "export_onnx",
        "cleanup_onnx",
        "convert_fp16",
    ]
    options = manifest.lineage.passes[2].config["provider_options"]
    assert options["TensorrtExecutionProvider"]["trt_fp16_enable"] == "1"
    (candidate,) = evidence.candidates
    assert candidate.name == "fp16" and candidate.accepted
    assert "fp16 won" in evidence.selection


def test_every_candidate_is_recorded_with_why_the_winner_won(
    digits_compiled: Compiled, keys: Keys
) -> None:
    evidence = _verified(digits_compiled, INT8_PROFILES[0], keys).manifest.evidence
    (chosen,) = [c for c in evidence.candidates if c.accepted]
    assert chosen.name == "int8-static-qdq" and chosen.metric == "accuracy"
    assert chosen.metric_value is not None and chosen.metric_value >= 0.97
    assert chosen.size_bytes == evidence.size_bytes
    assert "within accuracy >=" in evidence.selection and "fp32 host time" in evidence.selection
    assert evidence.excluded_nodes == () and evidence.fallback_ops == ()


def test_tflite_profile_is_skipped_with_one_line_naming_what_to_install(
    digits_compiled: Compiled,
) -> None:
    assert not digits_compiled.bundle(TFLITE_PROFILE).exists()
    lines = [line for line in digits_compiled.stderr.splitlines() if TFLITE_PROFILE in line]
    assert len(lines) == 1
    assert "skipped" in lines[0] and "edgefleet tools setup litert-torch" in lines[0]


def test_summary_table_has_a_row_per_bundle(digits_compiled: Compiled, keys: Keys) -> None:
    rows = {
        line.split("│")[1].strip(): line
        for line in digits_compiled.stdout.splitlines()
        if "│" in line
    }
    for tag in (*INT8_PROFILES, FALLBACK_PROFILE):
        evidence = _verified(digits_compiled, tag, keys).manifest.evidence
        assert evidence.float_size_bytes is not None
        ratio = evidence.size_bytes / evidence.float_size_bytes
        assert f"{ratio:.2f}x" in rows[tag]
        assert (
            str(digits_compiled.bundle(tag).with_name(digits_compiled.bundle(tag).name + ".tar"))
            in rows[tag]
        )
    assert "skipped" in rows[TFLITE_PROFILE]


def test_onnx_file_input(
    float_onnx: Path,
    digits_data: DigitsData,
    keys: Keys,
    digits_compiled: Compiled,
    tmp_path: Path,
) -> None:
    result = compile_model(
        CompileRequest(
            model=str(float_onnx),
            profiles=[INT8_PROFILES[0]],
            calibration=digits_data.calibration,
            eval_data=digits_data.evaluation,
            out=tmp_path,
            key=keys.private,
            name="digits-onnx",
            version="2.0.0-rc.1",
            speed_check=False,  # compared byte for byte with the int8 build below
        )
    )
    (built,) = result.bundles
    manifest = verify_bundle(built.bundle.directory, [keys.verify]).manifest
    assert (manifest.name, manifest.version, manifest.precision) == (
        "digits-onnx",
        "2.0.0-rc.1",
        "int8",
    )
    assert manifest.lineage.source_model_sha256 == sha256_file(float_onnx)
    assert [p.name for p in manifest.lineage.passes] == [
        "import_onnx",
        "cleanup_onnx",
        "quantize_static_qdq",
    ]
    assert manifest.evidence.float_size_bytes is not None
    assert 0 < manifest.evidence.float_size_bytes <= float_onnx.stat().st_size
    assert manifest.evidence.top1_agreement is not None and manifest.evidence.top1_agreement >= 0.99
    assert built.bundle.tar == tmp_path / "digits-onnx-2.0.0-rc.1-x86-64_avx512-vnni.tar"
    assert (built.bundle.directory / GOLDEN_FILE).is_file()
    # Deterministic training, export and calibration: the same weights through the ONNX file
    # give, byte for byte, the int8 model the PyTorch factory gave.
    from_torch = digits_compiled.bundle(INT8_PROFILES[0]) / "model.onnx"
    assert sha256_file(built.bundle.directory / "model.onnx") == sha256_file(from_torch)
