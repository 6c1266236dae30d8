"""The served model: input checks, batching, and the slot that swaps models atomically.

A request takes the current :class:`ServedModel` from the :class:`ModelSlot` once and runs on
it to the end, so a swap never disturbs requests in flight: they finish on the old model, new
requests get the new one, and the old session is freed when its last request returns.

Batch axis: when the model's first input axis is dynamic (a string such as ``"batch"``) or 1,
it is the batch axis and one *example* is the input without it; the agent stacks examples
into one run (dynamic) or runs them one by one (fixed 1). Otherwise an example is the whole
input tensor.

Several inputs: an example is ``{name: array}`` with one entry per model input. The batch axis
is the one all inputs share (every first axis dynamic, or every one 1); when they disagree (a
recurrent model's ``state`` and ``sr`` beside its ``input``) each example holds whole tensors
and runs alone. Examples whose non-batch dimensions differ (two sequence lengths) run one by
one instead of stacked.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from edge_agent.errors import InputError
from edge_agent.runtime.base import Array, PreparedModel
from edgefleet.bundle import Manifest, TensorSpec

Shape = tuple[int | str, ...]
Feed = dict[str, Array]
"""One example of a model with several inputs: an array per input name."""
Example = Array | Feed
"""One example: an array for a one-input model, a :data:`Feed` for a model with several."""


class BatchResults(list[list[Array]]):
    """Per example its outputs in manifest order (views into ``batch``), from one batched run:
    ``batch`` holds that run's outputs, one row per example, for whoever wants them whole
    (the recorder stores them as they are)."""

    def __init__(self, rows: list[list[Array]], batch: list[Array]) -> None:
        super().__init__(rows)
        self.batch = batch


@dataclass(frozen=True)
class ServedModel:
    manifest: Manifest
    prepared: PreparedModel
    artifact_sha256: str
    deployment_id: str
    path: Path

    @functools.cached_property
    def name(self) -> str:
        return self.manifest.name

    @functools.cached_property
    def version(self) -> str:
        return self.manifest.version

    @property
    def provider(self) -> str:
        return self.prepared.provider

    @functools.cached_property
    def input_spec(self) -> TensorSpec:
        return self.manifest.interface.inputs[0]

    @functools.cached_property
    def input_name(self) -> str:
        return self.input_spec.name

    @functools.cached_property
    def single_output(self) -> bool:
        return len(self.manifest.interface.outputs) == 1

    @functools.cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.manifest.interface.inputs)

    @property
    def multi_input(self) -> bool:
        return len(self.manifest.interface.inputs) > 1

    @functools.cached_property
    def batch_axis(self) -> str | None:
        """``"dynamic"``, ``"one"`` (fixed batch of 1) or None (no batch axis), shared by
        every input (None when the inputs disagree)."""
        kinds = {_batch_kind(spec.shape) for spec in self.manifest.interface.inputs}
        return kinds.pop() if len(kinds) == 1 else None

    @functools.cached_property
    def example_shapes(self) -> dict[str, Shape]:
        return {
            spec.name: spec.shape[1:] if self.batch_axis else spec.shape
            for spec in self.manifest.interface.inputs
        }

    @functools.cached_property
    def example_shape(self) -> Shape:
        """The first input's example shape."""
        return self.example_shapes[self.input_spec.name]

    def coerce(self, value: Any, where: str = "input") -> Example:
        """Turn one JSON example into arrays of the model's dtypes, or raise InputError.

        A one-input model takes a nested list (or ``{name: list}`` with its one input name)
        and gets an array; a model with several inputs takes ``{name: list}`` with every
        input name and gets a :data:`Feed`. Errors name the input at fault."""
        if not self.multi_input and not isinstance(value, dict):
            return coerce_example(value, self.input_spec, self.example_shape, where)
        names = self.input_names
        listed = ", ".join(repr(name) for name in names)
        if not isinstance(value, dict):
            raise InputError(
                f"{where} must be an object with one entry per model input ({listed}); "
                f"model {self.name} has {len(names)} inputs"
            )
        unknown = [key for key in value if key not in names]
        if unknown:
            raise InputError(
                f"{where} names unknown input {unknown[0]!r}; model {self.name} has inputs "
                f"({listed})"
            )
        missing = [name for name in names if name not in value]
        if missing:
            raise InputError(
                f"{where} is missing input {missing[0]!r}; model {self.name} has inputs ({listed})"
            )
        feed = {
            spec.name: coerce_example(
                value[spec.name], spec, self.example_shapes[spec.name], f"{where}[{spec.name!r}]"
            )
            for spec in self.manifest.interface.inputs
        }
        _check_shared_dims(self.manifest.interface.inputs, feed, self.batch_axis is not None, where)
        return feed if self.multi_input else feed[self.input_spec.name]

    def run_examples(self, examples: Sequence[Example]) -> list[list[Array]]:
        """Run examples; returns, per example, the outputs in manifest order."""
        if self.batch_axis == "dynamic" and examples:
            if len(examples) == 1:  # the serving path's common case: keep it short
                example = examples[0]
                feed = (
                    self._feed(example, batched=True)
                    if isinstance(example, dict)
                    else {self.input_name: example[np.newaxis]}
                )
                outputs = self.prepared.run(feed)
                if len(outputs) == 1:
                    return [[outputs[0][0]]]
                return [[output[0] for output in outputs]]
            if _same_shapes(examples):
                outputs = self.prepared.run(self._stacked(examples))
                return BatchResults(
                    [[output[index] for output in outputs] for index in range(len(examples))],
                    outputs,
                )
        results: list[list[Array]] = []
        for example in examples:
            outputs = self.prepared.run(self._feed(example, batched=self.batch_axis is not None))
            results.append([output[0] if self.batch_axis else output for output in outputs])
        return results

    def _feed(self, example: Example, *, batched: bool) -> dict[str, Array]:
        if isinstance(example, dict):
            return {name: a[np.newaxis] if batched else a for name, a in example.items()}
        return {self.input_spec.name: example[np.newaxis] if batched else example}

    def _stacked(self, examples: Sequence[Example]) -> dict[str, Array]:
        first = examples[0]
        if isinstance(first, dict):
            return {
                name: np.stack([cast(Feed, example)[name] for example in examples])
                for name in first
            }
        return {self.input_spec.name: np.stack(cast(Sequence[Array], examples))}

    def to_json(self, outputs: list[Array]) -> Any:
        """One example's outputs as JSON: a nested list, or {name: list} for several outputs."""
        if self.single_output:
            return outputs[0].tolist()
        specs = self.manifest.interface.outputs
        return {spec.name: output.tolist() for spec, output in zip(specs, outputs, strict=True)}


def _batch_kind(shape: Shape) -> str | None:
    if not shape:
        return None
    if isinstance(shape[0], str):
        return "dynamic"
    return "one" if shape[0] == 1 else None


def _same_shapes(examples: Sequence[Example]) -> bool:
    first = examples[0]
    if isinstance(first, dict):
        shapes = {name: a.shape for name, a in first.items()}
        return all(
            isinstance(e, dict) and all(a.shape == shapes[n] for n, a in e.items())
            for e in examples
        )
    return all(not isinstance(e, dict) and e.shape == first.shape for e in examples)


def _check_shared_dims(specs: Sequence[TensorSpec], feed: Feed, batched: bool, where: str) -> None:
    """Inputs that name the same dynamic axis (``input_ids`` and ``attention_mask`` both
    ``"sequence"``) must agree on its size."""
    seen: dict[str, tuple[str, int]] = {}
    for spec in specs:
        dims = spec.shape[1:] if batched else spec.shape
        for axis, dim in enumerate(dims):
            if not isinstance(dim, str):
                continue
            size = int(feed[spec.name].shape[axis])
            other = seen.setdefault(dim, (spec.name, size))
            if other[1] != size:
                raise InputError(
                    f"{where}[{spec.name!r}] has {size} along axis {dim!r} but "
                    f"{where}[{other[0]!r}] has {other[1]}; inputs sharing an axis must agree"
                )


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
    """Holds the model being served; :meth:`swap` is atomic.

    Reading the slot takes no lock: reading one attribute is atomic, and every request
    reads it once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: ServedModel | None = None

    def current(self) -> ServedModel | None:
        return self._model

    def swap(self, model: ServedModel | None) -> ServedModel | None:
        """Serve ``model`` from now on; returns the one it replaces."""
        with self._lock:
            previous, self._model = self._model, model
            return previous
