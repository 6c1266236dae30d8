"""Knowledge distillation: train a smaller student to imitate a teacher on the user's data.

The loss mixes the teacher's softened outputs and the labels (Hinton et al.)::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross_entropy(student, labels)

Without labels only the first term is used (alpha = 1). Python API::

    from compiler.distill import DistillSettings, distill
    result = distill(teacher, student, x_train, y_train, DistillSettings(temperature=4, alpha=0.7))
    result.student  # trained, in eval mode

CLI: ``edgefleet compile TEACHER --distill-student pkg.mod:factory --train-data train.npz ...``
exports and compiles the trained student instead of the teacher.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from compiler.data import FloatArray, IntArray
from compiler.errors import CompileError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillSettings:
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the teacher term; 1 - alpha goes to the labels
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-2
    seed: int = 0
    threads: int | None = None  # torch intra-op threads while training (None: as set)

    def check(self) -> None:
        if self.temperature <= 0:
            raise CompileError(f"distillation temperature {self.temperature}: must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise CompileError(f"distillation alpha {self.alpha}: must be within [0, 1]")
        if self.epochs < 1 or self.batch_size < 1:
            raise CompileError("distillation epochs and batch size must be at least 1")


@dataclass(frozen=True)
class DistillResult:
    student: nn.Module
    teacher_parameters: int
    student_parameters: int
    final_loss: float

    @property
    def parameter_ratio(self) -> float:
        return self.student_parameters / self.teacher_parameters


def distill(
    teacher: nn.Module,
    student: nn.Module,
    x: FloatArray,
    y: IntArray | None = None,
    settings: DistillSettings | None = None,
) -> DistillResult:
    """Train ``student`` (in place) from ``teacher`` on ``x`` (and labels ``y`` if given)."""
    import torch

    settings = settings or DistillSettings()
    settings.check()
    previous = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _train(teacher, student, x, y, settings)
    finally:
        torch.set_num_threads(previous)


def _train(
    teacher: nn.Module,
    student: nn.Module,
    x: FloatArray,
    y: IntArray | None,
    settings: DistillSettings,
) -> DistillResult:
    import torch
    from torch.nn import functional

    from compiler.torch_state import count_parameters

    if y is not None and len(y) != len(x):
        raise CompileError(f"distillation data: {len(x)} samples but {len(y)} labels")
    torch.manual_seed(settings.seed)
    inputs = torch.from_numpy(x)
    teacher.eval()
    with torch.no_grad():
        targets = torch.cat([teacher(inputs[i : i + 256]) for i in range(0, len(inputs), 256)])
        probe = student(inputs[:2])
    if probe.shape[1:] != targets.shape[1:]:
        raise CompileError(
            f"the student's output shape {tuple(probe.shape[1:])} differs from the teacher's "
            f"{tuple(targets.shape[1:])}"
        )
    labels = torch.from_numpy(y) if y is not None else None
    alpha = settings.alpha if labels is not None else 1.0
    t = settings.temperature
    steps = settings.epochs * ((len(inputs) + settings.batch_size - 1) // settings.batch_size)
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=steps
    )
    order = torch.Generator().manual_seed(settings.seed)
    student.train()
    loss = torch.zeros(())
    for _ in range(settings.epochs):
        permutation = torch.randperm(len(inputs), generator=order)
        for start in range(0, len(inputs), settings.batch_size):
            index = permutation[start : start + settings.batch_size]
            logits = student(inputs[index])
            soft = functional.kl_div(
                functional.log_softmax(logits / t, dim=-1),
                functional.softmax(targets[index] / t, dim=-1),
                reduction="batchmean",
            )
            loss = alpha * t * t * soft
            if labels is not None and alpha < 1.0:
                loss = loss + (1.0 - alpha) * functional.cross_entropy(logits, labels[index])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    student.eval()
    result = DistillResult(
        student, count_parameters(teacher), count_parameters(student), float(loss.detach())
    )
    log.info(
        "distilled: student has %d parameters (%.1f%% of the teacher's), final loss %.4f",
        result.student_parameters,
        100 * result.parameter_ratio,
        result.final_loss,
    )
    return result
