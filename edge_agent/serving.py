"""The served model: input checks, batching, and the slot that swaps models atomically.

A request takes the current :class:`ServedModel` from the :class:`ModelSlot` once and runs on
it to the end, so a swap never disturbs requests in flight: they finish on the old model, new
requests get the new one, and the old session is freed when its last request returns.

Batch axis: when the model's first input axis is dynamic (a string such as ``"batch"``) or 1,
it is the batch axis and one *example* is the input without it; the agent stacks examples
into one run (dynamic) or runs them one by one (fixed 1). Otherwise an example is the whole
input tensor.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import InputError
from edge_agent.runtime.base import Array, PreparedModel
from edgefleet.bundle import Manifest, TensorSpec

Shape = tuple[int | str, ...]


@dataclass(frozen=True)
class ServedModel:
    manifest: Manifest
    prepared: PreparedModel
    artifact_sha256: str
    deployment_id: str
    path: Path

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def provider(self) -> str:
        return self.prepared.provider

    @functools.cached_property
    def input_spec(self) -> TensorSpec:
        return self.manifest.interface.inputs[0]

    @functools.cached_property
    def batch_axis(self) -> str | None:
        """``"dynamic"``, ``"one"`` (fixed batch of 1) or None (no batch axis)."""
        shape = self.input_spec.shape
        if not shape:
            return None
        if isinstance(shape[0], str):
            return "dynamic"
        return "one" if shape[0] == 1 else None

    @functools.cached_property
    def example_shape(self) -> Shape:
        shape = self.input_spec.shape
        return shape[1:] if self.batch_axis else shape

    def coerce(self, value: Any, where: str = "input") -> Array:
        """Turn one JSON example into an array of the model's dtype, or raise InputError.

        The local API feeds models with one input; a model with several (installed and
        golden-checked like any other) is refused here with their names."""
        inputs = self.manifest.interface.inputs
        if len(inputs) != 1:
            names = ", ".join(repr(spec.name) for spec in inputs)
            raise InputError(
                f"model {self.name} has {len(inputs)} inputs ({names}); the local API feeds "
                "models with exactly one input"
            )
        return coerce_example(value, self.input_spec, self.example_shape, where)

    def run_examples(self, examples: Sequence[Array]) -> list[list[Array]]:
        """Run examples; returns, per example, the outputs in manifest order."""
        spec = self.input_spec
        if self.batch_axis == "dynamic" and examples:
            batch = examples[0][np.newaxis] if len(examples) == 1 else np.stack(examples)
            outputs = self.prepared.run({spec.name: batch})
            return [[output[index] for output in outputs] for index in range(len(examples))]
        results: list[list[Array]] = []
        for example in examples:
            feed = example[np.newaxis, ...] if self.batch_axis == "one" else example
            outputs = self.prepared.run({spec.name: feed})
            results.append([output[0] if self.batch_axis else output for output in outputs])
        return results

    def to_json(self, outputs: list[Array]) -> Any:
        """One example's outputs as JSON: a nested list, or {name: list} for several outputs."""
        specs = self.manifest.interface.outputs
        if len(specs) == 1:
            return outputs[0].tolist()
        return {spec.name: output.tolist() for spec, output in zip(specs, outputs, strict=True)}


def count_nan(results: Sequence[Sequence[Array]]) -> int:
    """How many examples have a NaN in any float output."""
    return sum(
        1
        for outputs in results
        if any(out.dtype.kind == "f" and bool(np.isnan(out).any()) for out in outputs)
    )


def coerce_example(value: Any, spec: TensorSpec, shape: Shape, where: str = "input") -> Array:
    expected = _fmt_shape(shape)
    if not isinstance(value, list | int | float) or isinstance(value, bool):
        raise InputError(
            f"{where} must be a nested list of numbers of shape {expected}, "
            f"got {type(value).__name__}"
        )
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise InputError(
            f"{where} is not a rectangular nested list (ragged rows); expected shape {expected}"
        ) from exc
    if array.dtype.kind not in "iuf":
        raise InputError(f"{where} must hold only numbers; found {_kind_name(array)} values")
    if not _shape_fits(array.shape, shape):
        raise InputError(
            f"{where} has shape {_fmt_shape(array.shape)} but model input {spec.name!r} expects "
            f"{expected} per example (tensor shape {_fmt_shape(spec.shape)})"
        )
    target = np.dtype(spec.dtype)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            index = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise InputError(f"{where} contains NaN or infinity at index {list(index)}")
    if target.kind in "iu":
        if array.dtype.kind == "f" and not np.all(np.equal(np.floor(array), array)):
            raise InputError(
                f"{where} holds non-integer values but model input {spec.name!r} is {target}"
            )
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InputError(
                f"{where} holds values outside [{info.min}, {info.max}] of {target} "
                f"(model input {spec.name!r})"
            )
    elif target.kind != "f":
        raise InputError(f"model input {spec.name!r} has dtype {target}, which the API cannot fill")
    return array.astype(target)


def _shape_fits(actual: tuple[int, ...], expected: Shape) -> bool:
    if len(actual) != len(expected):
        return False
    return all(
        isinstance(want, str) or want == got for got, want in zip(actual, expected, strict=True)
    )


def _fmt_shape(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(dim) for dim in shape) + ("," if len(shape) == 1 else "") + ")"


def _kind_name(array: Array) -> str:
    return {"b": "boolean", "U": "string", "S": "bytes", "O": "null or mixed"}.get(
        array.dtype.kind, str(array.dtype)
    )


class ModelSlot:
    """Holds the model being served; :meth:`swap` is atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: ServedModel | None = None

    def current(self) -> ServedModel | None:
        with self._lock:
            return self._model

    def swap(self, model: ServedModel | None) -> ServedModel | None:
        """Serve ``model`` from now on; returns the one it replaces."""
        with self._lock:
            previous, self._model = self._model, model
            return previous
