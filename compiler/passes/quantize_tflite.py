"""A float ``.tflite`` -> int8 with ``ai-edge-quantizer``, in the compiler's own environment.

Recipes: ``static_wi8_ai8`` (full int8, int8 input and output, calibrated on the user's data:
the representative data set), ``dynamic_wi8_afp32`` (dynamic range: int8 weights, float
activations) and ``weight_only_wi8_afp32``. Calibration feeds the samples in batches of the model's
static batch.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.passes.onnx_tools import subset

AI_EDGE_QUANTIZER = Requirement(
    "ai_edge_quantizer", "pip install ai-edge-quantizer (the compiler extra installs it)"
)

TfliteRecipe = Literal["static_wi8_ai8", "dynamic_wi8_afp32", "weight_only_wi8_afp32"]


class QuantizeTfliteConfig(PassConfig):
    recipe: TfliteRecipe = "static_wi8_ai8"
    max_calibration_samples: int = 256
    seed: int = 0


class QuantizeTflite(Pass[QuantizeTfliteConfig]):
    name: ClassVar[str] = "quantize_tflite"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TFLITE})
    output_format: ClassVar[Format] = Format.TFLITE_INT8
    required_features: ClassVar[frozenset[str]] = frozenset({"precision:int8", "format:tflite"})
    requires: ClassVar[tuple[Requirement, ...]] = (AI_EDGE_QUANTIZER,)
    uses_calibration: ClassVar[bool] = True

    def run(self, source: Artifact, out: Path, context: PassContext) -> QuantizeTfliteConfig:
        import importlib

        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        config = self.config
        quantizer: Any = importlib.import_module("ai_edge_quantizer.quantizer")
        recipes: Any = importlib.import_module("ai_edge_quantizer.recipe")
        interpreter = Interpreter(str(source.file))
        signatures = interpreter.get_signature_list()
        batch = int(interpreter.get_input_details()[0]["shape"][0])
        if len(signatures) != 1:
            raise CompileError(f"quantize_tflite: {source.file} has {len(signatures)} signatures")
        ((signature, names),) = signatures.items()
        if len(names["inputs"]) != 1:
            raise CompileError("quantize_tflite: handles single-input models for now")
        engine = quantizer.Quantizer(str(source.file))
        engine.load_quantization_recipe(getattr(recipes, config.recipe)())
        chatter = io.StringIO()  # the quantizer prints progress bars and a size report
        with (
            contextlib.redirect_stderr(chatter),
            contextlib.redirect_stdout(chatter),
            warnings.catch_warnings(),  # "preserve_all_tensors is for debugging": calibration
        ):
            warnings.simplefilter("ignore", UserWarning)
            calibration = None
            if engine.need_calibration:
                if context.calibration is None:
                    raise CompileError("quantize_tflite needs calibration data (--calibration)")
                samples = subset(context.calibration.x, config.max_calibration_samples, config.seed)
                name = names["inputs"][0]
                feeds = [
                    {name: np.ascontiguousarray(samples[i : i + batch])}
                    for i in range(0, len(samples) - batch + 1, batch)
                ]
                calibration = engine.calibrate({signature: feeds})
            result = engine.quantize(
                calibration, enable_progress_bar=False, enable_progress_report=False
            )
        result.export_model(str(out), overwrite=True)
        return config
