"""PyTorch models between passes, and the user's training hook.

A pass from ``torch`` to ``torch`` (pruning, distillation) writes its model to its output
file as ``{"kind": ..., "factory": ..., "state": ...}``: ``kind="pruned"`` holds a
torch-pruning state dict that reshapes a fresh copy of the user's module to the pruned
channel counts; ``kind="student"`` holds the state dict of a module built by ``factory``
(a ``module:function`` returning an ``nn.Module``). :func:`load_module` rebuilds the module
from the file and the user's original module, so no class has to be pickled.

The training hook (``--train-step module:function``) is a callable ``train(model, epochs)``
that trains ``model`` in place for ``epochs`` epochs on the user's data with the user's
optimizer; the compiler calls it to fine-tune after pruning and to train lottery tickets.
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.errors import CompileError

if TYPE_CHECKING:
    from torch import nn

TrainStep = Callable[["nn.Module", int], None]


def import_callable(spec: str, what: str) -> Callable[..., Any]:
    """``package.module:function`` -> the callable (the current directory is importable)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CompileError(f"{what} {spec!r}: give it as 'package.module:function'")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CompileError(
            f"{what} {spec!r}: cannot import module {module_name!r} ({exc})"
        ) from exc
    found = getattr(module, attribute, None)
    if not callable(found):
        raise CompileError(f"{what} {spec!r}: module {module_name!r} has no callable {attribute!r}")
    return found  # type: ignore[no-any-return]


def load_train_step(spec: str) -> TrainStep:
    return import_callable(spec, "--train-step")


def save_pruned(module: nn.Module, path: Path) -> None:
    import torch
    import torch_pruning as tp  # type: ignore[import-untyped]

    torch.save({"kind": "pruned", "factory": None, "state": tp.state_dict(module)}, path)


def save_student(module: nn.Module, factory: str, path: Path) -> None:
    import torch

    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save({"kind": "student", "factory": factory, "state": state}, path)


def load_module(path: Path, original: nn.Module) -> nn.Module:
    """The module a torch -> torch pass wrote to ``path``, in eval mode."""
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("kind") == "pruned":
        import torch_pruning as tp

        module = copy.deepcopy(original)
        tp.load_state_dict(module, state_dict=saved["state"])
        return module.eval()
    if saved.get("kind") == "weights":
        module = copy.deepcopy(original)
        module.load_state_dict(saved["state"])
        return module.eval()
    if saved.get("kind") == "student":
        module = build_student(saved["factory"])
        module.load_state_dict(saved["state"])
        return module.eval()
    raise CompileError(f"{path}: not a model written by a compiler pass")


def build_student(spec: str) -> nn.Module:
    from torch import nn

    built = import_callable(spec, "--distill-student")()
    if isinstance(built, tuple):  # a MODEL-style factory: (module, example)
        built = built[0]
    if not isinstance(built, nn.Module):
        raise CompileError(
            f"--distill-student {spec!r}: must return a torch.nn.Module, got {type(built).__name__}"
        )
    return built


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_weights(module: nn.Module, path: Path) -> None:
    """Weights for the user's own architecture (unchanged shapes, e.g. sparse after pruning)."""
    import torch

    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save({"kind": "weights", "factory": None, "state": state}, path)


def current_module(path: Path | None, original: nn.Module) -> nn.Module:
    """The module an artifact holds: the file a previous pass wrote, else a copy of the
    user's module (never the user's module itself: passes must not change it)."""
    return copy.deepcopy(original) if path is None else load_module(path, original)
