"""How a candidate is judged against the float model, and the bound it must stay within.

Built-in metrics (``reference`` is the float model's outputs, ``outputs`` the candidate's,
``labels`` the eval labels or ``None``):

- ``accuracy``: top-1 accuracy on the labels (needs eval labels), higher is better;
- ``top1_agreement``: share of samples whose arg-max equals the float model's;
- ``cosine``: mean per-sample cosine similarity to the float outputs;
- ``min_cosine``: the worst sample's cosine similarity, for a guarantee that holds per input
  (an embedding model's every sentence), not only on average;
- ``max_abs_error``: largest absolute difference to the float outputs, lower is better.

A user metric is ``package.module:function`` taking ``(reference, outputs, labels)`` and
returning a float, higher is better.

A model with several outputs is judged on one of them when the user names it (``--output-name``),
else on every output, keeping the worst score (``accuracy`` always reads the first output, the
one the labels are for); see :func:`score`.

The bound: ``max_drop`` is how far the candidate may fall below the float model's own score
(for ``max_abs_error``, how large the error may be); ``min_metric`` is an absolute floor (for
``max_abs_error``, a ceiling). Both may be given; both must hold.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from compiler.data import FloatArray, IntArray
from compiler.errors import CompileError

MetricFunction = Callable[[FloatArray, FloatArray, IntArray | None], float]

DEFAULT_MAX_DROP = 0.01


def _flat(a: FloatArray) -> FloatArray:
    return a.reshape(len(a), -1)


def top1_agreement(reference: FloatArray, outputs: FloatArray, labels: IntArray | None) -> float:
    return float(np.mean(_flat(outputs).argmax(axis=1) == _flat(reference).argmax(axis=1)))


def accuracy(reference: FloatArray, outputs: FloatArray, labels: IntArray | None) -> float:
    if labels is None:
        raise CompileError("metric 'accuracy' needs eval labels: an --eval .npz with 'y'")
    return float(np.mean(_flat(outputs).argmax(axis=1) == labels))


def cosines(reference: FloatArray, outputs: FloatArray) -> npt.NDArray[np.float64]:
    """Each sample's cosine similarity to the float output (1 where both are zero)."""
    a, b = _flat(reference).astype(np.float64), _flat(outputs).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    similarity: npt.NDArray[np.float64] = np.where(
        norms > 0, np.sum(a * b, axis=1) / np.maximum(norms, 1e-30), 1.0
    )
    return similarity


def cosine(reference: FloatArray, outputs: FloatArray, labels: IntArray | None) -> float:
    return float(np.mean(cosines(reference, outputs)))


def min_cosine(reference: FloatArray, outputs: FloatArray, labels: IntArray | None) -> float:
    return float(np.min(cosines(reference, outputs)))


def max_abs_error(reference: FloatArray, outputs: FloatArray, labels: IntArray | None) -> float:
    return float(np.max(np.abs(outputs - reference)))


_BUILTIN: dict[str, tuple[MetricFunction, bool]] = {
    "accuracy": (accuracy, True),
    "top1_agreement": (top1_agreement, True),
    "cosine": (cosine, True),
    "min_cosine": (min_cosine, True),
    "max_abs_error": (max_abs_error, False),
}


@dataclass(frozen=True)
class Metric:
    name: str
    function: MetricFunction
    higher_is_better: bool = True

    def __call__(
        self, reference: FloatArray, outputs: FloatArray, labels: IntArray | None
    ) -> float:
        return float(self.function(reference, outputs, labels))


def resolve_metric(name: str | None, *, classifier: bool, has_labels: bool) -> Metric:
    """A built-in metric by name, a user ``module:function``, or (``None``) the default:
    accuracy with labels, top-1 agreement for a classifier, cosine otherwise."""
    if name is None:
        name = (
            "accuracy"
            if classifier and has_labels
            else "top1_agreement"
            if classifier
            else "cosine"
        )
    if name in _BUILTIN:
        function, higher = _BUILTIN[name]
        if name == "accuracy" and not has_labels:
            raise CompileError("--metric accuracy needs eval labels: an --eval .npz with 'y'")
        return Metric(name, function, higher)
    if ":" not in name:
        known = ", ".join(sorted(_BUILTIN))
        raise CompileError(f"--metric {name!r}: not one of {known}, nor 'module:function'")
    module_name, _, attribute = name.partition(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CompileError(f"--metric {name!r}: cannot import {module_name!r} ({exc})") from exc
    user = getattr(module, attribute, None)
    if not callable(user):
        raise CompileError(f"--metric {name!r}: {module_name!r} has no callable {attribute!r}")
    return Metric(name, user, True)


def score(
    metric: Metric,
    reference: Mapping[str, FloatArray],
    outputs: Mapping[str, FloatArray],
    labels: IntArray | None,
    output: str | None = None,
) -> float:
    """``metric`` on the chosen ``output``, or its worst value over every output."""
    names = list(reference)
    if output is not None:
        names = [output]
    elif metric.name == "accuracy":
        names = names[:1]
    values = [metric(reference[name], outputs[name], labels) for name in names]
    return min(values) if metric.higher_is_better else max(values)


def check_output(output: str | None, names: Sequence[str]) -> None:
    """Fail naming the model's outputs unless ``output`` is one of them (or not given)."""
    if output is not None and output not in names:
        listed = ", ".join(repr(n) for n in names)
        raise CompileError(
            f"--output-name {output!r}: the model has no such output (it has {listed})"
        )


@dataclass(frozen=True)
class Bound:
    max_drop: float | None = DEFAULT_MAX_DROP
    min_metric: float | None = None

    def limit(self, metric: Metric, float_value: float) -> float:
        """The worst acceptable value of ``metric``."""
        limits: list[float] = []
        if metric.higher_is_better:
            if self.max_drop is not None:
                limits.append(float_value - self.max_drop)
            if self.min_metric is not None:
                limits.append(self.min_metric)
            return max(limits) if limits else float("-inf")
        if self.max_drop is not None:
            limits.append(float_value + self.max_drop)
        if self.min_metric is not None:
            limits.append(self.min_metric)
        return min(limits) if limits else float("inf")

    def holds(self, metric: Metric, value: float, float_value: float) -> bool:
        limit = self.limit(metric, float_value)
        return value >= limit if metric.higher_is_better else value <= limit

    def describe(self, metric: Metric, float_value: float) -> str:
        sign = ">=" if metric.higher_is_better else "<="
        return f"{metric.name} {sign} {self.limit(metric, float_value):.4g}"
