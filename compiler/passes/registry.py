"""Every pass by name, imported only when asked for: a pass whose optional dependency is
missing is reported as unavailable (with what to install); importing the compiler never
breaks because of it."""

from __future__ import annotations

import importlib
from typing import Any

from compiler.errors import CompileError
from compiler.passes.base import Pass

PASSES: dict[str, str] = {
    "export_onnx": "compiler.passes.export_onnx:ExportOnnx",
    "import_onnx": "compiler.passes.import_onnx:ImportOnnx",
    "cleanup_onnx": "compiler.passes.cleanup_onnx:CleanupOnnx",
    "prune_channels": "compiler.passes.prune_channels:PruneChannels",
    "lottery_ticket": "compiler.passes.lottery_ticket:LotteryTicket",
    "distill": "compiler.passes.distill:Distill",
    "quantize_static_qdq": "compiler.passes.quantize_static:QuantizeStatic",
    "quantize_dynamic": "compiler.passes.quantize_dynamic:QuantizeDynamic",
    "convert_fp16": "compiler.passes.convert_fp16:ConvertFp16",
    "torch_to_tflite": "compiler.passes.torch_to_tflite:TorchToTflite",
    "quantize_tflite": "compiler.passes.quantize_tflite:QuantizeTflite",
    "fp16_tflite": "compiler.passes.fp16_tflite:Fp16Tflite",
    "onnx_to_tflite": "compiler.passes.onnx_to_tflite:OnnxToTflite",
}


def pass_class(name: str) -> type[Pass[Any]]:
    """The class of pass ``name`` (its module imports nothing heavy)."""
    try:
        target = PASSES[name]
    except KeyError:
        raise CompileError(f"unknown pass {name!r}; known: {', '.join(sorted(PASSES))}") from None
    module, _, attribute = target.partition(":")
    cls: type[Pass[Any]] = getattr(importlib.import_module(module), attribute)
    return cls


def availability() -> dict[str, str | None]:
    """``{pass name: None if it can run here, else what to install}``."""
    found: dict[str, str | None] = {}
    for name in PASSES:
        missing = [r.message() for r in pass_class(name).requires if not r.available()]
        found[name] = "; ".join(missing) or None
    return found
