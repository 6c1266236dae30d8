"""A float ``.tflite`` -> full int8 with ``ai-edge-quantizer`` (recipe ``static_wi8_ai8``),
calibrated on the user's data (the representative data set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.passes.onnx_tools import subset

AI_EDGE_QUANTIZER = Requirement("ai_edge_quantizer", "pip install ai-edge-quantizer")


class QuantizeTfliteConfig(PassConfig):
    recipe: Literal["static_wi8_ai8", "dynamic_wi8_afp32"] = "static_wi8_ai8"
    max_calibration_samples: int = 256
    seed: int = 0
    signature: str = "serving_default"


class QuantizeTflite(Pass[QuantizeTfliteConfig]):
    name: ClassVar[str] = "quantize_tflite"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TFLITE})
    output_format: ClassVar[Format] = Format.TFLITE_INT8
    required_features: ClassVar[frozenset[str]] = frozenset({"precision:int8", "format:tflite"})
    requires: ClassVar[tuple[Requirement, ...]] = (AI_EDGE_QUANTIZER,)
    uses_calibration: ClassVar[bool] = True

    def run(self, source: Artifact, out: Path, context: PassContext) -> QuantizeTfliteConfig:
        import importlib

        if context.calibration is None:
            raise CompileError("quantize_tflite needs calibration data (--calibration)")
        quantizer: Any = importlib.import_module("ai_edge_quantizer.quantizer")
        recipes: Any = importlib.import_module("ai_edge_quantizer.recipe")
        config = self.config
        engine = quantizer.Quantizer(str(source.file))
        engine.load_quantization_recipe(getattr(recipes, config.recipe)())
        samples = subset(context.calibration.x, config.max_calibration_samples, config.seed)
        name = (
            engine.get_signature_input_names(config.signature)[0]
            if hasattr(engine, "get_signature_input_names")
            else "args_0"
        )
        feeds = [{name: samples[i : i + 1]} for i in range(len(samples))]
        result = engine.calibrate({config.signature: feeds})
        engine.quantize(result).export_model(str(out))
        return config
