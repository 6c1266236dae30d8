"""A float ``.tflite`` -> float16 weights with ``ai-edge-quantizer`` (its ``float_casting``
algorithm, weight-only): convolution, fully-connected and embedding weights are stored as
float16 and dequantized in front of float32 kernels, so the file is about half the size and
the outputs stay within float16 rounding of fp32. On a CPU without float16 arithmetic LiteRT
expands the weights back to float32 when the model loads: a size variant, not a speed one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.passes.quantize_tflite import AI_EDGE_QUANTIZER, run_quantizer


class Fp16TfliteConfig(PassConfig):
    """No options: every op ai-edge-quantizer can cast gets float16 weights."""


class Fp16Tflite(Pass[Fp16TfliteConfig]):
    name: ClassVar[str] = "fp16_tflite"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TFLITE})
    output_format: ClassVar[Format] = Format.TFLITE_FP16
    required_features: ClassVar[frozenset[str]] = frozenset({"precision:fp16", "format:tflite"})
    requires: ClassVar[tuple[Requirement, ...]] = (AI_EDGE_QUANTIZER,)

    def run(self, source: Artifact, out: Path, context: PassContext) -> Fp16TfliteConfig:
        run_quantizer(source.file, out, fp16_recipe(), context)
        return self.config


def fp16_recipe() -> Any:
    """ai-edge-quantizer's weight-only recipe with 16-bit float casting on every supported op."""
    import importlib

    manager: Any = importlib.import_module("ai_edge_quantizer.recipe_manager")
    algorithms: Any = importlib.import_module("ai_edge_quantizer.algorithm_manager")
    qtyping: Any = importlib.import_module("ai_edge_quantizer.qtyping")
    recipes = manager.RecipeManager()
    recipes.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=algorithms.AlgorithmName.FLOAT_CASTING,
    )
    return recipes.get_quantization_recipe()
