"""``edgefleet compile --explain``: each profile's plan (candidates, passes, their configs and
formats, what is missing here) without running anything or importing anything heavy."""

from __future__ import annotations

import json
from collections.abc import Sequence

from compiler.graph import GraphKind
from compiler.pipeline import CompileRequest, plan_recipes, prefix_pipeline
from compiler.recipes import recipe_for
from compiler.sources import resolve_source
from compiler.targets import load_targets
from hardware_profiles import HardwareProfile


def explain(request: CompileRequest) -> str:
    """The plan as text, one block per profile."""
    source = resolve_source(request.model)
    profiles: Sequence[HardwareProfile] = load_targets(request.profiles)
    prefix = prefix_pipeline(source, request)
    kind = {"torch": "PyTorch", "onnx": "ONNX", "tflite": "TFLite"}[prefix.source.value]
    lines = [f"model: {request.model} ({kind})"]
    lines.append("float model, shared by every profile:")
    for step in prefix.passes:
        lines.append(f"  - {step.describe()} {_config(step.config.model_dump(mode='json'))}")
        lines.extend(f"    ! {problem}" for problem in step.problems(None))
    if request.quantization == "auto":
        lines.append(
            "quantization: auto (dynamic int8 first on CPU targets when the exported graph is "
            "LSTM/GRU/attention or MatMul-dominated; static QDQ otherwise)"
        )
    _, skipped = plan_recipes(request, profiles, source)
    skipped_tags = {s.tag: s.reason for s in skipped}
    start = prefix.source
    for profile in profiles:
        recipe = recipe_for(
            profile,
            source=start,
            graph=GraphKind.UNKNOWN,
            quantization=request.quantization,
            calibrate_method=request.calibrate_method,
            seed=request.seed,
        )
        lines.append("")
        lines.append(
            f"{profile.tag} ({profile.accelerator.value}, {profile.runtime.value}, "
            f"{profile.format.value}; precisions {', '.join(p.value for p in profile.precisions)})"
        )
        for note in recipe.notes:
            lines.append(f"  note: {note}")
        if recipe.speed_rule and request.speed_check:
            lines.append("  rule: a quantized candidate must be faster than fp32 on the host")
        elif recipe.speed_rule:
            lines.append("  rule off (--no-speed-check): quantized candidates may be slower")
        if recipe.float_pipeline is not None:
            lines.append("  float TFLite model (the fp32 baseline every candidate starts from):")
            for step in recipe.float_pipeline.passes:
                lines.append(
                    f"     - {step.describe()} {_config(step.config.model_dump(mode='json'))}"
                )
            lines.extend(f"     ! {p}" for p in recipe.float_pipeline.problems(profile))
        for number, candidate in enumerate(recipe.candidates, 1):
            problems = candidate.pipeline.problems(profile)
            state = "cannot run here" if problems else "ready"
            origin = (
                "the float ONNX model"
                if candidate.pipeline.source.value == "onnx"
                else "the float TFLite model"
                if candidate.pipeline.source.value == "tflite"
                else f"the {candidate.pipeline.source.value} model"
            )
            search = (
                ", sensitive nodes kept in float until the bound holds"
                if candidate.searchable
                else ""
            )
            lines.append(
                f"  {number}. {candidate.name} [{candidate.precision.value}] from {origin}: "
                f"{state}{search}"
            )
            if not candidate.pipeline.passes:
                lines.append("     (the float model itself)")
            for step in candidate.pipeline.passes:
                lines.append(
                    f"     - {step.describe()} {_config(step.config.model_dump(mode='json'))}"
                )
            lines.extend(f"     ! {problem}" for problem in problems)
        if profile.tag in skipped_tags:
            lines.append(f"  => skipped: {skipped_tags[profile.tag]}")
        ops = profile.execution.accelerator_ops
        if ops:
            fallback = (
                "allowed" if profile.execution.allow_cpu_fallback else "FORBIDDEN (compile fails)"
            )
            lines.append(
                f"  op check: {len(ops)} accelerator op types declared; CPU fallback {fallback}"
            )
    return "\n".join(lines)


def _config(config: dict[str, object]) -> str:
    return json.dumps(config, sort_keys=True, separators=(", ", "="))
