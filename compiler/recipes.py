"""What to build for a hardware profile: ``recipe_for(profile)``, a plain function.

Rules of this first compiler (the full one adds fp16, TFLite and an accuracy-guarded search):

- TFLite profiles are skipped, with the reason;
- for ONNX profiles, the profile's precisions are tried in its order of preference and the first
  one this compiler can build is chosen: int8 when the profile's quantization scheme is
  ``static_qdq`` (per the profile's per-channel, activation and weight types), or fp32;
- fp16 cannot be built yet: a profile that prefers it gets its next precision, and fp32 when
  none is buildable (fp32 is the fallback), with a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.quantize import StaticQdqConfig
from hardware_profiles.schema import ArtifactFormat, HardwareProfile, Precision, QuantScheme


@dataclass(frozen=True)
class Recipe:
    profile: HardwareProfile
    precision: Precision
    quantize: StaticQdqConfig | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skip:
    tag: str
    reason: str


def recipe_for(profile: HardwareProfile, *, seed: int = 0) -> Recipe | Skip:
    if profile.format is ArtifactFormat.TFLITE:
        return Skip(
            profile.tag,
            "it needs a TFLite model; TFLite output arrives with the full compiler",
        )
    skipped: list[Precision] = []
    for precision in profile.precisions:
        if precision is Precision.INT8 and profile.quantization.scheme is QuantScheme.STATIC_QDQ:
            quantize = _static_qdq(profile, seed)
            return Recipe(profile, precision, quantize, _notes(skipped, precision))
        if precision is Precision.FP32:
            return Recipe(profile, precision, None, _notes(skipped, precision))
        skipped.append(precision)
    return Recipe(profile, Precision.FP32, None, _notes(skipped, Precision.FP32))


def _notes(skipped: list[Precision], chosen: Precision) -> tuple[str, ...]:
    if not skipped:
        return ()
    names = ", ".join(p.value for p in skipped)
    fallback = " (fp32 is the fallback)" if chosen is Precision.FP32 else ""
    return (
        f"prefers {names}, which this compiler cannot build yet: built {chosen.value}{fallback}",
    )


def _static_qdq(profile: HardwareProfile, seed: int) -> StaticQdqConfig:
    quant = profile.quantization
    return StaticQdqConfig(
        per_channel=quant.per_channel,
        activations=quant.activations,
        weights=quant.weights,
        seed=seed,
    )
