"""PyTorch -> float TFLite with ``litert-torch``, at a static batch.

``litert-torch`` cannot share the compiler's environment (it pins ``typing-extensions<4.13``,
which downgrades pydantic, and pulls jax), so it runs in its own tool environment
(:mod:`compiler.toolenv`, ``edgefleet tools setup litert-torch``): this pass exports the module
with ``torch.export`` here, and ``compiler/tools/litert_convert.py`` converts the exported
program there (same torch version). Quantization is a separate pass (``quantize_tflite``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.toolenv import LITERT_TORCH, requirement


class TorchToTfliteConfig(PassConfig):
    static_batch: int = 1
    timeout_s: int = 900


class TorchToTflite(Pass[TorchToTfliteConfig]):
    name: ClassVar[str] = "torch_to_tflite"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TORCH})
    output_format: ClassVar[Format] = Format.TFLITE
    required_features: ClassVar[frozenset[str]] = frozenset({"format:tflite"})
    requires: ClassVar[tuple[Requirement, ...]] = (
        Requirement("torch", "pip install torch"),
        requirement(LITERT_TORCH),
    )

    def run(self, source: Artifact, out: Path, context: PassContext) -> TorchToTfliteConfig:
        if context.torch_model is None:
            raise CompileError("torch_to_tflite needs the PyTorch module")
        import torch

        model = context.torch_model
        example = model.example[:1].repeat(
            self.config.static_batch, *([1] * (model.example.ndim - 1))
        )
        program_file = context.workdir / "program.pt2"
        try:
            with torch.no_grad():
                program = torch.export.export(model.module.eval(), (example,))
        except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds; one line out
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CompileError(f"torch_to_tflite: torch.export failed: {first}") from None
        torch.export.save(program, str(program_file))
        LITERT_TORCH.run_script(
            "litert_convert.py",
            ["--program", str(program_file), "--out", str(out)],
            timeout_s=self.config.timeout_s,
        )
        if not out.is_file():
            raise CompileError(f"torch_to_tflite: litert-torch wrote no model to {out}")
        return self.config
