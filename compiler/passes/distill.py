"""Knowledge distillation as a pass: the teacher (the user's model) trains a student built by
``student`` (``module:factory``) on ``train_data`` (.npz: ``x``, optional labels ``y``);
the student replaces the teacher for the rest of the pipeline. See :mod:`compiler.distill`."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement


class DistillConfig(PassConfig):
    student: str  # 'module:factory' returning an nn.Module (or (module, example))
    train_data: str
    train_data_sha256: str = ""  # part of the cache key: the data, not only its path
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.7, ge=0.0, le=1.0)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-2, gt=0.0)
    threads: int | None = Field(None, ge=1)


class Distill(Pass[DistillConfig]):
    name: ClassVar[str] = "distill"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TORCH})
    output_format: ClassVar[Format] = Format.TORCH
    requires: ClassVar[tuple[Requirement, ...]] = (Requirement("torch", "pip install torch"),)

    def run(self, source: Artifact, out: Path, context: PassContext) -> DistillConfig:
        if context.torch_model is None:
            raise CompileError("distill needs the PyTorch teacher module")
        from compiler.data import load_dataset
        from compiler.distill import DistillSettings, distill
        from compiler.torch_state import build_student, current_module, save_student

        config = self.config
        data = load_dataset(Path(config.train_data), "training")
        teacher = current_module(source.path, context.torch_model.module)
        student = build_student(config.student)
        settings = DistillSettings(
            temperature=config.temperature,
            alpha=config.alpha,
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            seed=context.seed,
            threads=config.threads,
        )
        result = distill(teacher, student, data.x, data.y, settings)
        save_student(result.student, config.student, out)
        return config.model_copy(update={"train_data_sha256": data.sha256})
