"""The float TFLite variants for CPU targets that run LiteRT: float16 weights (``fp16_tflite``)
and dynamic range (``quantize_tflite`` ``dynamic_wi8_afp32``), made from the digits CNN's
float ``.tflite`` (litert-torch), run in the real LiteRT interpreter and read back from the
flatbuffer; then the accuracy-guarded search over them for ``raspberry-pi/4b-litert``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from compiler.litert_host import LiteRtModel
from compiler.passes.base import Artifact, Format
from compiler.passes.cache import PassCache
from compiler.passes.fp16_tflite import Fp16Tflite, Fp16TfliteConfig
from compiler.passes.quantize_tflite import QuantizeTflite, QuantizeTfliteConfig
from compiler.pipeline import CompileRequest, compile_model
from compiler.recipes import QuantizationMode, recipe_for
from compiler.toolenv import LITERT_TORCH
from edgefleet.bundle import VerifiedBundle, verify_bundle
from hardware_profiles import load_profile
from tests.compiler.conftest import DIGITS, DigitsData, Keys, digits_pass_context

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not LITERT_TORCH.ready(), reason=LITERT_TORCH.hint()),
]

PI_LITERT = "raspberry-pi/4b-litert"
WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "DEQUANTIZE"}


@dataclass(frozen=True)
class Variants:
    fp32: Path
    fp16: Path
    dynamic: Path


def weight_types(path: Path) -> set[tuple[str, str]]:
    """(op, tensor type) of every constant tensor of two or more axes an op reads: the
    weights as stored in the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model(str(path))
    graph = model.subgraphs[0]
    found: set[tuple[str, str]] = set()
    for op in graph.operators:
        code = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        for index in op.inputs:
            if index < 0:
                continue
            tensor = graph.tensors[index]
            buffer = model.buffers[tensor.buffer]
            stored = (buffer.data is not None and len(buffer.data)) or getattr(buffer, "size", 0)
            if stored and tensor.shape is not None and len(tensor.shape) >= 2:
                found.add((code, names[tensor.type]))
    return found


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory, digits_data: DigitsData) -> Variants:
    model, context = digits_pass_context(tmp_path_factory, digits_data, "variants-work")
    cache = PassCache(None)
    recipe = recipe_for(load_profile(PI_LITERT), source=Format.TORCH)
    assert recipe.float_pipeline is not None
    fp32 = recipe.float_pipeline.run(Artifact(Format.TORCH, model.sha256()), context, cache)
    fp16 = Fp16Tflite(Fp16TfliteConfig())
    dynamic = QuantizeTflite(QuantizeTfliteConfig(recipe="dynamic_wi8_afp32"))
    out = tmp_path_factory.mktemp("variants")
    fp16.run(fp32, out / "fp16.tflite", context)
    dynamic.run(fp32, out / "dynamic.tflite", context)
    return Variants(fp32.file, out / "fp16.tflite", out / "dynamic.tflite")


def test_fp16_stores_float16_weights_at_half_the_size(variants: Variants) -> None:
    assert {t for _, t in weight_types(variants.fp32)} == {"FLOAT32"}
    # float16 constants, dequantized to float32 in front of the float kernels
    assert weight_types(variants.fp16) == {("DEQUANTIZE", "FLOAT16")}
    ratio = variants.fp16.stat().st_size / variants.fp32.stat().st_size
    assert 0.45 <= ratio <= 0.55, ratio


def test_dynamic_range_stores_int8_weights_read_by_the_kernels(variants: Variants) -> None:
    found = weight_types(variants.dynamic)
    assert {t for _, t in found} == {"INT8"}
    assert {op for op, _ in found} == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    ratio = variants.dynamic.stat().st_size / variants.fp32.stat().st_size
    assert 0.22 <= ratio <= 0.32, ratio
    host = LiteRtModel(variants.dynamic)
    assert host.input_dtype == np.float32 and host.output_scales == {}  # float activations


@pytest.mark.parametrize("name", ["fp16", "dynamic"])
def test_variant_runs_in_litert_within_one_point_of_fp32(variants: Variants, name: str) -> None:
    from compiler.examples.digits import load_split

    _, x_test, _, y_test = load_split()
    reference = LiteRtModel(variants.fp32).run(x_test)
    got = LiteRtModel(getattr(variants, name)).run(x_test)
    accuracy = float(np.mean(got.argmax(axis=1) == y_test))
    float_accuracy = float(np.mean(reference.argmax(axis=1) == y_test))
    assert accuracy >= float_accuracy - 0.01, (accuracy, float_accuracy)
    bound = {"fp16": 0.05, "dynamic": 1.0}[name]  # float16 rounding vs run-time int8
    assert 0 < float(np.max(np.abs(got - reference))) < bound


def _compile(
    out: Path,
    digits_data: DigitsData,
    keys: Keys,
    *,
    quantization: QuantizationMode = "auto",
    speed_check: bool = True,
) -> VerifiedBundle:
    result = compile_model(
        CompileRequest(
            model=DIGITS,
            profiles=[PI_LITERT],
            calibration=digits_data.calibration,
            eval_data=digits_data.evaluation,
            out=out,
            key=keys.private,
            name="digits",
            version="1.0.0",
            quantization=quantization,
            speed_check=speed_check,
        )
    )
    (built,) = result.bundles
    return verify_bundle(built.bundle.directory, [keys.verify])


@pytest.fixture(scope="module")
def float_only(
    tmp_path_factory: pytest.TempPathFactory, digits_data: DigitsData, keys: Keys
) -> VerifiedBundle:
    """``--quantization none``: the float16-weights candidate, then fp32."""
    return _compile(tmp_path_factory.mktemp("pi-float"), digits_data, keys, quantization="none")


def test_search_without_int8_packs_the_fp16_tflite(float_only: VerifiedBundle) -> None:
    manifest = float_only.manifest
    assert manifest.format == "tflite" and manifest.precision == "fp16"
    evidence = manifest.evidence
    (chosen,) = [c for c in evidence.candidates if c.accepted]
    assert chosen.name == "fp16-tflite" and chosen.host_latency_ms is not None
    # sizes are measured against the float .tflite, in LiteRT
    assert 0.45 <= evidence.size_bytes / evidence.float_size_bytes <= 0.55
    assert [p.name for p in manifest.lineage.passes][-2:] == ["torch_to_tflite", "fp16_tflite"]


def test_agent_reproduces_the_fp16_golden_outputs(float_only: VerifiedBundle) -> None:
    from edge_agent.runtime.litert import LiteRtBackend
    from edge_agent.serving import ServedModel
    from edge_agent.update.golden import run_golden

    manifest = float_only.manifest
    prepared = LiteRtBackend(load_profile(PI_LITERT)).prepare(float_only.model_path, manifest)
    served = ServedModel(
        manifest=manifest,
        prepared=prepared,
        artifact_sha256=manifest.files[manifest.model_file].sha256,
        deployment_id="d",
        path=float_only.path,
    )
    run_golden(served, float_only)


def test_search_tries_full_int8_first_and_records_every_candidate(
    tmp_path: Path, digits_data: DigitsData, keys: Keys
) -> None:
    """Speed rule off (the digits CNN is microseconds per sample: timing it here would make
    this test depend on the machine's load): the cheapest candidate within the bound wins."""
    verified = _compile(tmp_path, digits_data, keys, speed_check=False)
    evidence = verified.manifest.evidence
    (first, *_) = evidence.candidates
    assert first.name == "int8-full-tflite" and first.accepted
    assert evidence.size_bytes / evidence.float_size_bytes <= 0.30
    assert verified.manifest.precision == "int8"
