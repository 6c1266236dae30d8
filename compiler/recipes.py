"""What to build for a hardware profile: ``recipe_for(profile)``, a plain function.

A recipe is the profile's candidates in the order the accuracy-guarded search tries them
(cheapest first), each a pipeline of passes from the float model:

- CPU profiles (``static_qdq``): int8 static QDQ, per-channel, calibrated (min-max, entropy or
  percentile), nodes kept in float by the search when needed; fp32 as the fallback.
  Transformer / recurrent graphs (or ``quantization="dynamic"``) try dynamic int8 first.
- GPU profiles: fp16 (``keep_io_types``, TensorRT / CUDA provider options recorded), then
  int8 QDQ if the profile lists it, fp32 as the fallback.
- NPU profiles with the QNN provider: QDQ built by ``get_qnn_qdq_config`` (uint8 activations),
  then fp16 if listed.
- TFLite profiles: ``torch_to_tflite`` (litert-torch, in its tool environment) for a PyTorch
  model or ``onnx_to_tflite`` (onnx2tf, in its own) for an ONNX one, then ``quantize_tflite``
  (ai-edge-quantizer, full int8 with int8 input and output, calibrated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from compiler.graph import GraphKind
from compiler.passes.base import Format, Pass
from compiler.passes.convert_fp16 import PROVIDER_OPTIONS, ConvertFp16, Fp16Config
from compiler.passes.onnx_to_tflite import OnnxToTflite, OnnxToTfliteConfig
from compiler.passes.pipeline import Pipeline
from compiler.passes.quantize_dynamic import DynamicConfig, QuantizeDynamic
from compiler.passes.quantize_static import CalibrationMethodName, QuantizeStatic, StaticQdqConfig
from compiler.passes.quantize_tflite import QuantizeTflite, QuantizeTfliteConfig
from compiler.passes.torch_to_tflite import TorchToTflite, TorchToTfliteConfig
from hardware_profiles.schema import (
    Accelerator,
    ArtifactFormat,
    HardwareProfile,
    Precision,
    QuantScheme,
)

QuantizationMode = Literal["auto", "static", "dynamic", "none"]


@dataclass(frozen=True)
class CandidatePlan:
    """One variant to try: its name, precision and pipeline from the float model."""

    name: str
    precision: Precision
    pipeline: Pipeline
    searchable: bool = False  # the search may keep sensitive nodes in float

    def with_excluded(self, nodes: tuple[str, ...]) -> CandidatePlan:
        """The same plan with ``nodes`` kept in float by its quantization pass."""
        passes: list[Pass[Any]] = []
        for step in self.pipeline.passes:
            if isinstance(step, QuantizeStatic):
                step = QuantizeStatic(step.config.model_copy(update={"nodes_to_exclude": nodes}))
            elif isinstance(step, QuantizeDynamic):
                step = QuantizeDynamic(step.config.model_copy(update={"nodes_to_exclude": nodes}))
            passes.append(step)
        name = f"{self.name}-excl-{len(nodes)}" if nodes else self.name
        return CandidatePlan(
            name, self.precision, Pipeline(passes, source=self.pipeline.source), self.searchable
        )


@dataclass(frozen=True)
class Recipe:
    profile: HardwareProfile
    candidates: tuple[CandidatePlan, ...]
    notes: tuple[str, ...] = ()

    @property
    def precision(self) -> Precision:
        """The precision of the first (preferred) candidate."""
        return self.candidates[0].precision

    @property
    def speed_rule(self) -> bool:
        """Whether a quantized candidate must be faster than fp32 on the host (CPU targets)."""
        return self.profile.accelerator is Accelerator.CPU


def recipe_for(
    profile: HardwareProfile,
    *,
    source: Format = Format.ONNX,
    graph: GraphKind = GraphKind.UNKNOWN,
    quantization: QuantizationMode = "auto",
    calibrate_method: CalibrationMethodName = "minmax",
    seed: int = 0,
) -> Recipe:
    """The candidates for ``profile``; ``source`` is the user's model format (``torch`` or
    ``onnx``), ``graph`` what the float graph is made of, once known."""
    if profile.format is ArtifactFormat.TFLITE:
        return _tflite(profile, source, seed)
    candidates: list[CandidatePlan] = []
    notes: list[str] = []
    for precision in profile.precisions:
        if precision is Precision.INT8 and quantization != "none":
            candidates.extend(_int8(profile, graph, quantization, calibrate_method, seed, notes))
        elif precision is Precision.FP16:
            options = {
                provider: PROVIDER_OPTIONS[provider]
                for provider in profile.execution.providers
                if provider in PROVIDER_OPTIONS
            }
            fp16 = ConvertFp16(Fp16Config(provider_options=options))
            pipeline = Pipeline([fp16], source=Format.ONNX)
            candidates.append(CandidatePlan("fp16", Precision.FP16, pipeline))
    if Precision.FP32 in profile.precisions or not candidates:
        candidates.append(CandidatePlan("fp32", Precision.FP32, Pipeline([], source=Format.ONNX)))
    if Precision.FP32 not in profile.precisions:
        notes.append(f"{profile.tag} lists no fp32: there is no float fallback")
    return Recipe(profile, tuple(candidates), tuple(notes))


def _int8(
    profile: HardwareProfile,
    graph: GraphKind,
    quantization: QuantizationMode,
    method: CalibrationMethodName,
    seed: int,
    notes: list[str],
) -> list[CandidatePlan]:
    quant = profile.quantization
    found: list[CandidatePlan] = []
    cpu = profile.accelerator is Accelerator.CPU
    dynamic = quantization == "dynamic" or (quantization == "auto" and graph is GraphKind.SEQUENCE)
    if dynamic and cpu:
        dynamic_config = DynamicConfig(per_channel=quant.per_channel)
        pipeline = Pipeline([QuantizeDynamic(dynamic_config)], source=Format.ONNX)
        found.append(CandidatePlan("int8-dynamic", Precision.INT8, pipeline, searchable=True))
        if quantization == "dynamic":
            return found
    elif dynamic:
        notes.append(f"dynamic int8 does not run on the {profile.accelerator.value}: static QDQ")
    if quant.scheme is not QuantScheme.STATIC_QDQ:
        return found
    qnn = "QNNExecutionProvider" in profile.execution.providers
    config = StaticQdqConfig(
        per_channel=quant.per_channel,
        activations=quant.activations,
        weights=quant.weights,
        calibrate_method=method,
        seed=seed,
        qnn=qnn,
    )
    name = "int8-qnn-qdq" if qnn else "int8-static-qdq"
    pipeline = Pipeline([QuantizeStatic(config)], source=Format.ONNX)
    found.append(CandidatePlan(name, Precision.INT8, pipeline, searchable=True))
    return found


def _tflite(profile: HardwareProfile, source: Format, seed: int) -> Recipe:
    """Full int8 (int8 input and output, calibrated): ``torch_to_tflite`` (litert-torch, in
    its tool environment) from a PyTorch model, ``onnx_to_tflite`` (onnx2tf, in its own) from
    an ONNX one, then ``quantize_tflite`` (ai-edge-quantizer ``static_wi8_ai8``)."""
    batch = profile.defaults.batch_size
    quantize = QuantizeTflite(QuantizeTfliteConfig(seed=seed))
    convert: Pass[Any]
    if source is Format.TORCH:
        convert, start = TorchToTflite(TorchToTfliteConfig(static_batch=batch)), Format.TORCH
    else:
        convert, start = OnnxToTflite(OnnxToTfliteConfig(static_batch=batch)), Format.ONNX
    pipeline = Pipeline([convert, quantize], source=start)
    return Recipe(profile, (CandidatePlan("int8-full-tflite", Precision.INT8, pipeline),))
