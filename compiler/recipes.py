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
- TFLite profiles: the float TFLite model first (the recipe's ``float_pipeline``:
  ``torch_to_tflite`` (litert-torch, in its tool environment) for a PyTorch model,
  ``onnx_to_tflite`` (onnx2tf, in its own) for an ONNX one, nothing for a ``.tflite``), which
  is the fp32 baseline sizes and host latencies are measured against; then, from it and as the
  profile's precisions allow, full int8 (``quantize_tflite`` ``static_wi8_ai8``, int8 input and
  output, calibrated), dynamic range (``dynamic_wi8_afp32``: int8 weights, float activations;
  CPU targets listing a float precision), fp16 weights (``fp16_tflite``) and fp32 itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from compiler.graph import GraphKind
from compiler.host_cpu import mismatch_note
from compiler.passes.base import Format, Pass
from compiler.passes.convert_fp16 import PROVIDER_OPTIONS, ConvertFp16, Fp16Config
from compiler.passes.fp16_tflite import Fp16Tflite, Fp16TfliteConfig
from compiler.passes.onnx_to_tflite import OnnxToTflite, OnnxToTfliteConfig
from compiler.passes.pipeline import Pipeline
from compiler.passes.quantize_dynamic import DynamicConfig, QuantizeDynamic
from compiler.passes.quantize_static import CalibrationMethodName, QuantizeStatic, StaticQdqConfig
from compiler.passes.quantize_tflite import QuantizeTflite, QuantizeTfliteConfig, TfliteRecipe
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
    # a CPU target rejects it when it is not faster than fp32 on the host; False for a size
    # variant whose weights the runtime expands to float32 at load (fp16 TFLite on a CPU)
    faster_than_fp32: bool = True

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
        pipeline = Pipeline(passes, source=self.pipeline.source)
        return CandidatePlan(name, self.precision, pipeline, self.searchable, self.faster_than_fp32)


@dataclass(frozen=True)
class Recipe:
    profile: HardwareProfile
    candidates: tuple[CandidatePlan, ...]
    notes: tuple[str, ...] = ()
    # TFLite: how the float model becomes this profile's float .tflite, the fp32 baseline the
    # candidates start from and are measured against (None: the user gave a .tflite)
    float_pipeline: Pipeline | None = None

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
    """The candidates for ``profile``; ``source`` is the user's model format (``torch``,
    ``onnx`` or ``tflite``), ``graph`` what the float graph is made of, once known."""
    if profile.format is ArtifactFormat.TFLITE:
        return _tflite(profile, source, quantization, seed)
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
    if any(c.precision is not Precision.FP32 for c in candidates):
        note = mismatch_note(profile)
        if note:
            notes.append(note)
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


def _tflite(
    profile: HardwareProfile, source: Format, quantization: QuantizationMode, seed: int
) -> Recipe:
    """The float TFLite model (converted from PyTorch or ONNX, or the user's own), then the
    variants the profile's precisions allow, cheapest first (see the module docstring).
    ``quantization``: ``static`` keeps full int8 only, ``dynamic`` dynamic range only,
    ``none`` no int8 at all."""
    batch = profile.defaults.batch_size
    convert: Pass[Any] | None = None
    if source is Format.TORCH:
        convert = TorchToTflite(TorchToTfliteConfig(static_batch=batch))
    elif source is Format.ONNX:
        convert = OnnxToTflite(OnnxToTfliteConfig(static_batch=batch))
    float_pipeline = Pipeline([convert], source=source) if convert is not None else None
    precisions = profile.precisions
    float_allowed = Precision.FP32 in precisions or Precision.FP16 in precisions
    candidates: list[CandidatePlan] = []
    notes: list[str] = []

    def plan(name: str, precision: Precision, *passes: Pass[Any], faster: bool = True) -> None:
        pipeline = Pipeline(list(passes), source=Format.TFLITE)
        candidates.append(CandidatePlan(name, precision, pipeline, faster_than_fp32=faster))

    if Precision.INT8 in precisions and quantization != "none":
        dynamic = float_allowed and profile.accelerator is Accelerator.CPU
        if quantization == "dynamic" and not dynamic:
            where = profile.accelerator.value
            notes.append(f"dynamic range does not run on the {where}: full int8")
        if quantization in ("auto", "static") or not dynamic:
            plan("int8-full-tflite", Precision.INT8, _quantize("static_wi8_ai8", seed))
        if quantization in ("auto", "dynamic") and dynamic:
            plan("int8-dynamic-tflite", Precision.INT8, _quantize("dynamic_wi8_afp32", seed))
    if Precision.FP16 in precisions:
        plan("fp16-tflite", Precision.FP16, Fp16Tflite(Fp16TfliteConfig()), faster=False)
    if Precision.FP32 in precisions or not candidates:
        plan("fp32-tflite", Precision.FP32)
    if Precision.FP32 not in precisions:
        notes.append(f"{profile.tag} lists no fp32: there is no float fallback")
    return Recipe(profile, tuple(candidates), tuple(notes), float_pipeline)


def _quantize(recipe: TfliteRecipe, seed: int) -> QuantizeTflite:
    return QuantizeTflite(QuantizeTfliteConfig(recipe=recipe, seed=seed))
