"""Mergeable per-feature sketches for drift monitoring: Welford mean/M2, min, max, histogram.

A :class:`SketchSet` follows up to ``max_features`` flat positions of one tensor of each
example (evenly spaced when the tensor is larger), so its cost per request is bounded whatever
the input size. Examples are only sampled when added (one stack and one fancy index per batch
of examples) and folded in bulk every ``FOLD_ROWS`` examples or when the sketches are read,
with Chan's parallel update, so a request costs about a microsecond, not a few vector
operations. :class:`InputSketches` keeps one set per input name for models with several named
inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edgefleet.protocol.messages import FeatureSketch, Histogram

DEFAULT_BOUNDS: tuple[float, ...] = (-10.0, -3.0, -1.0, -0.3, 0.0, 0.3, 1.0, 3.0, 10.0)
Floats = npt.NDArray[np.float64]
FOLD_ROWS = 256
Tensor = npt.NDArray[np.generic]


class SketchSet:
    """Sketches of one tensor per example (not thread-safe: the caller holds a lock)."""

    def __init__(
        self,
        max_features: int = 32,
        bounds: Sequence[float] = DEFAULT_BOUNDS,
        *,
        name: str | None = None,
    ) -> None:
        self.max_features = max_features
        self.name = name
        """The model input these sketches follow, for a model with several inputs."""
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._index: npt.NDArray[np.int64] | None = None
        self._width = -1
        self._pending: list[npt.NDArray[np.generic]] = []
        """Sampled features, one block of rows per add."""
        self._pending_rows = 0
        self.count = 0
        self.mean: Floats = np.zeros(0)
        self.m2: Floats = np.zeros(0)
        self.min: Floats = np.zeros(0)
        self.max: Floats = np.zeros(0)
        self.hist: npt.NDArray[np.int64] = np.zeros((0, 0), dtype=np.int64)

    def add(self, batch: npt.NDArray[np.generic]) -> None:
        """Add examples: ``batch`` has the examples on its first axis."""
        array = np.asarray(batch)
        self._add_rows(array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(1, -1))

    def add_examples(self, examples: Sequence[npt.NDArray[np.generic]]) -> None:
        """Add examples, each one array. Examples of one shape (the usual case) are sampled
        with one stack and one fancy index for all of them."""
        if not examples:
            return
        shape = examples[0].shape
        if all(example.shape == shape for example in examples):
            self._add_rows(np.stack(examples).reshape(len(examples), -1))
        else:  # a model with a dynamic axis besides the batch one
            for example in examples:
                self._add_rows(example.reshape(1, -1))

    def _add_rows(self, rows: npt.NDArray[np.generic]) -> None:
        """Sample the followed features of ``rows`` (one flattened example per row)."""
        width = int(rows.shape[1])
        if width != self._width:
            self._fold()
            self._reset(width)
        self._pending.append(rows[:, self._index])
        self._pending_rows += len(rows)
        if self._pending_rows >= FOLD_ROWS:
            self._fold()

    def _fold(self) -> None:
        if not self._pending:
            return
        values = np.concatenate(self._pending).astype(np.float64, copy=False)
        self._pending = []
        self._pending_rows = 0
        finite = np.isfinite(values).all(axis=1)
        values = values[finite]
        n = len(values)
        if n == 0:
            return
        mean = values.mean(axis=0)
        m2 = ((values - mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.min = np.minimum(self.min, values.min(axis=0))
        self.max = np.maximum(self.max, values.max(axis=0))
        width = len(self.bounds) + 1
        buckets = np.searchsorted(self.bounds, values, side="left")
        buckets += np.arange(values.shape[1]) * width
        counts = np.bincount(buckets.ravel(), minlength=values.shape[1] * width)
        self.hist += counts.reshape(values.shape[1], width)

    def _reset(self, width: int) -> None:
        k = min(width, self.max_features)
        self._index = np.unique(np.linspace(0, width - 1, k).round().astype(np.int64))
        k = len(self._index)
        self._width = width
        self.count = 0
        self.mean, self.m2 = np.zeros(k), np.zeros(k)
        self.min, self.max = np.full(k, np.inf), np.full(k, -np.inf)
        self.hist = np.zeros((k, len(self.bounds) + 1), dtype=np.int64)

    def sketches(self) -> tuple[FeatureSketch, ...]:
        self._fold()
        if self.count == 0 or self._index is None:
            return ()
        bounds = tuple(float(b) for b in self.bounds)
        return tuple(
            FeatureSketch(
                index=int(index),
                input_name=self.name,
                count=self.count,
                mean=float(self.mean[i]),
                m2=max(0.0, float(self.m2[i])),
                min=float(self.min[i]),
                max=float(self.max[i]),
                histogram=Histogram(bounds=bounds, counts=tuple(int(c) for c in self.hist[i])),
            )
            for i, index in enumerate(self._index)
        )


class InputSketches:
    """Sketches of a model's inputs: one :class:`SketchSet` for examples that are one array,
    one per input name for examples that are named arrays (not thread-safe either)."""

    def __init__(self, max_features: int = 32) -> None:
        self.max_features = max_features
        self.single = SketchSet(max_features)
        self.named: dict[str, SketchSet] = {}

    def add(self, batch: Tensor) -> None:
        """Add examples of a one-input model: ``batch`` has them on its first axis."""
        self.single.add(batch)

    def add_examples(self, examples: Sequence[Tensor | Mapping[str, Tensor]]) -> None:
        arrays: list[Tensor] = []
        by_name: dict[str, list[Tensor]] = {}
        for example in examples:
            if isinstance(example, Mapping):
                for name, array in example.items():
                    by_name.setdefault(name, []).append(np.asarray(array))
            else:
                arrays.append(example)
        self.single.add_examples(arrays)
        for name, named in by_name.items():
            sketch = self.named.get(name)
            if sketch is None:
                sketch = self.named[name] = SketchSet(self.max_features, name=name)
            sketch.add_examples(named)

    def sketches(self) -> tuple[FeatureSketch, ...]:
        """The one-input sketches, then each named input's, by name."""
        named = (sketch for name in sorted(self.named) for sketch in self.named[name].sketches())
        return (*self.single.sketches(), *named)
