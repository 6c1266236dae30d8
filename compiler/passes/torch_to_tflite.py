"""PyTorch -> TFLite with ``litert-torch`` (fp32, or fp16 weights), static batch.

``litert-torch`` pulls jax and pins ``typing-extensions<4.13`` (which downgrades pydantic): install
it in its own environment with ``pip install litert-torch``. Without it this pass is disabled,
and the pipeline check says so before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement

LITERT_TORCH = Requirement(
    "litert_torch", "pip install litert-torch (in its own environment: it downgrades pydantic)"
)


class TorchToTfliteConfig(PassConfig):
    precision: Literal["fp32", "fp16"] = "fp32"
    static_batch: int = 1


class TorchToTflite(Pass[TorchToTfliteConfig]):
    name: ClassVar[str] = "torch_to_tflite"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TORCH})
    output_format: ClassVar[Format] = Format.TFLITE
    required_features: ClassVar[frozenset[str]] = frozenset({"format:tflite"})
    requires: ClassVar[tuple[Requirement, ...]] = (
        LITERT_TORCH,
        Requirement("torch", "pip install torch"),
    )

    def run(self, source: Artifact, out: Path, context: PassContext) -> TorchToTfliteConfig:
        if context.torch_model is None:
            raise CompileError("torch_to_tflite needs the PyTorch module")
        import importlib

        import torch

        litert_torch: Any = importlib.import_module("litert_torch")
        example = context.torch_model.example[:1].repeat(
            self.config.static_batch, *([1] * (context.torch_model.example.ndim - 1))
        )
        flags: dict[str, Any] = {}
        if self.config.precision == "fp16":
            flags["quant_config"] = litert_torch.quantize.quant_config.QuantConfig(
                generative_recipe=None
            )
        with torch.no_grad():
            edge_model = litert_torch.convert(
                context.torch_model.module.eval(), (example,), **flags
            )
        edge_model.export(str(out))
        return self.config
