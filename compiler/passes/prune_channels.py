"""Structured pruning with ``torch-pruning``: whole channels are removed (the layers really
get narrower, so the exported ONNX file shrinks), then the user's training hook fine-tunes.

The ranking is the L1 or L2 norm of each channel group (every coupled layer of a channel is
pruned together, torch-pruning's dependency graph); layers that produce the model's output
keep their width. ``iterative_steps > 1`` prunes in steps with fine-tuning after each.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement

log = logging.getLogger(__name__)


class PruneConfig(PassConfig):
    ratio: float = Field(0.5, gt=0.0, lt=1.0)  # share of channels removed per prunable layer
    importance: Literal["l1", "l2"] = "l2"
    global_pruning: bool = False
    iterative_steps: int = Field(1, ge=1)
    fine_tune_epochs: int = Field(2, ge=0)  # per step, through train_step
    train_step: str | None = None  # 'module:function', train(model, epochs)
    round_to: int | None = Field(None, ge=1)


class PruneChannels(Pass[PruneConfig]):
    name: ClassVar[str] = "prune_channels"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TORCH})
    output_format: ClassVar[Format] = Format.TORCH
    requires: ClassVar[tuple[Requirement, ...]] = (
        Requirement("torch", "pip install torch"),
        Requirement("torch_pruning", "pip install torch-pruning"),
    )

    def run(self, source: Artifact, out: Path, context: PassContext) -> PruneConfig:
        if context.torch_model is None:
            raise CompileError("prune_channels needs the PyTorch module")
        import torch
        import torch_pruning as tp  # type: ignore[import-untyped]
        from torch import nn

        from compiler.torch_state import (
            count_parameters,
            current_module,
            load_train_step,
            save_pruned,
        )

        config = self.config
        train = load_train_step(config.train_step) if config.train_step else None
        module = current_module(source.path, context.torch_model.module).eval()
        example = context.torch_model.example
        with torch.no_grad():
            width = module(example).shape[-1]
        ignored = [
            m for m in module.modules() if isinstance(m, nn.Linear) and m.out_features == width
        ]
        norm = 1 if config.importance == "l1" else 2
        pruner = tp.pruner.MetaPruner(
            module,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=norm),
            pruning_ratio=config.ratio,
            global_pruning=config.global_pruning,
            iterative_steps=config.iterative_steps,
            ignored_layers=ignored,
            round_to=config.round_to,
        )
        before = count_parameters(module)
        torch.manual_seed(context.seed)
        for _ in range(config.iterative_steps):
            pruner.step()
            if train is not None and config.fine_tune_epochs:
                module.train()
                train(module, config.fine_tune_epochs)
                module.eval()
        log.info("prune_channels: %d -> %d parameters", before, count_parameters(module))
        save_pruned(module, out)
        return config
