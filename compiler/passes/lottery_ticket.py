"""Lottery-ticket style iterative magnitude pruning with weight rewinding (Frankle et al.).

Each round trains with the user's hook, removes the smallest-magnitude remaining weights of
every convolution and linear layer (one global ranking), and rewinds the surviving weights
to the rewind point: the given weights, or those after ``rewind_epochs`` of training. After
the last round the ticket is trained once more and the masks are made permanent. The result
keeps the architecture (zeros in dense tensors): it compresses in the bundle's archive, and
is the input to structured pruning or to a sparse runtime; it does not shrink the ONNX file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement

log = logging.getLogger(__name__)


class LotteryConfig(PassConfig):
    sparsity: float = Field(0.5, gt=0.0, lt=1.0)  # final share of zero weights
    rounds: int = Field(3, ge=1)
    epochs: int = Field(2, ge=1)  # training per round, and for the final ticket
    rewind_epochs: int = Field(0, ge=0)
    train_step: str  # 'module:function', train(model, epochs)


class LotteryTicket(Pass[LotteryConfig]):
    name: ClassVar[str] = "lottery_ticket"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TORCH})
    output_format: ClassVar[Format] = Format.TORCH
    requires: ClassVar[tuple[Requirement, ...]] = (Requirement("torch", "pip install torch"),)

    def run(self, source: Artifact, out: Path, context: PassContext) -> LotteryConfig:
        if context.torch_model is None:
            raise CompileError("lottery_ticket needs the PyTorch module")
        import torch
        from torch import nn
        from torch.nn.utils import prune

        from compiler.torch_state import current_module, load_train_step, save_weights

        config = self.config
        train = load_train_step(config.train_step)
        module = current_module(source.path, context.torch_model.module)
        torch.manual_seed(context.seed)
        if config.rewind_epochs:
            _train(module, train, config.rewind_epochs)
        rewind = {k: v.detach().clone() for k, v in module.state_dict().items()}
        layers = [
            (name, m)
            for name, m in module.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
        ]
        per_round = 1.0 - (1.0 - config.sparsity) ** (1.0 / config.rounds)
        for _ in range(config.rounds):
            _train(module, train, config.epochs)
            prune.global_unstructured(
                [(m, "weight") for _, m in layers],
                pruning_method=prune.L1Unstructured,
                amount=per_round,
            )
            with torch.no_grad():  # rewind the survivors (the masks stay)
                for key, value in module.state_dict().items():
                    target = _rewind_target(key)
                    if target in rewind and not key.endswith("_mask"):
                        value.copy_(rewind[target])
        _train(module, train, config.epochs)
        for _, m in layers:
            prune.remove(m, "weight")  # type: ignore[no-untyped-call]
        zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
        total = sum(m.weight.numel() for _, m in layers)
        log.info("lottery_ticket: %.1f%% of weights are zero", 100.0 * zeros / total)
        save_weights(module.eval(), out)
        return config


def _rewind_target(key: str) -> str:
    return key[: -len("_orig")] if key.endswith("weight_orig") else key


def _train(module: object, train: object, epochs: int) -> None:
    from torch import nn

    assert isinstance(module, nn.Module) and callable(train)
    module.train()
    train(module, epochs)
    module.eval()
