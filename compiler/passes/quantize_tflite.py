"""A float ``.tflite`` -> int8 weights with ``ai-edge-quantizer``, in the compiler's own
environment.

Recipes: ``static_wi8_ai8`` (full int8, int8 input and output, calibrated on the user's data:
the representative data set), ``dynamic_wi8_afp32`` (dynamic range: int8 weights, float
activations quantized by the kernels at run time) and ``weight_only_wi8_afp32`` (int8 weights
dequantized before float kernels). Calibration feeds the samples in batches of the model's
static batch. :func:`run_quantizer` is shared with ``fp16_tflite`` (float16 weights).
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

        recipes: Any = importlib.import_module("ai_edge_quantizer.recipe")
        config = self.config
        run_quantizer(source.file, out, getattr(recipes, config.recipe)(), context, config)
        return config


def run_quantizer(
    model: Path,
    out: Path,
    recipe: Any,
    context: PassContext,
    config: QuantizeTfliteConfig | None = None,
) -> None:
    """Apply an ai-edge-quantizer ``recipe`` to the float ``model``, calibrating on the
    context's data when the recipe needs it; write ``out``. The quantizer's progress bars and
    size report are swallowed; its failures end as one line."""
    import importlib

    quantizer: Any = importlib.import_module("ai_edge_quantizer.quantizer")
    config = config or QuantizeTfliteConfig()
    engine = quantizer.Quantizer(str(model))
    engine.load_quantization_recipe(recipe)
    chatter = io.StringIO()
    try:
        with (
            contextlib.redirect_stderr(chatter),
            contextlib.redirect_stdout(chatter),
            warnings.catch_warnings(),  # "preserve_all_tensors is for debugging": calibration
        ):
            warnings.simplefilter("ignore", UserWarning)
            calibration = None
            if engine.need_calibration:
                calibration = engine.calibrate(_representative(model, context, config))
            result = engine.quantize(
                calibration, enable_progress_bar=False, enable_progress_report=False
            )
    except CompileError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many kinds; one line out
        text = str(exc).strip().splitlines()
        raise CompileError(
            f"ai-edge-quantizer failed on {model.name}: {text[0] if text else type(exc).__name__}"
        ) from None
    result.export_model(str(out), overwrite=True)


def _representative(
    model: Path, context: PassContext, config: QuantizeTfliteConfig
) -> dict[str, list[dict[str, Any]]]:
    """The representative data set: calibration samples, batched like the model's input."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(model))
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise CompileError(f"quantize_tflite: {model.name} has {len(signatures)} signatures")
    ((signature, names),) = signatures.items()
    if len(names["inputs"]) != 1:
        raise CompileError("quantize_tflite: handles single-input models for now")
    if context.calibration is None:
        raise CompileError("quantize_tflite needs calibration data (--calibration)")
    shape = interpreter.get_input_details()[0]["shape"]
    batch = int(shape[0]) if len(shape) else 1
    samples = subset(context.calibration.x, config.max_calibration_samples, config.seed)
    name = names["inputs"][0]
    feeds = [
        {name: np.ascontiguousarray(samples[i : i + batch])}
        for i in range(0, len(samples) - batch + 1, batch)
    ]
    return {signature: feeds}
