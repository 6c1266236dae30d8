"""Calibration and evaluation data: loading, binding to the model's named inputs, digests.

Accepted files:

- ``.npy``: one array, ``N x input shape`` (the first axis is the sample axis), for a model
  with one input;
- ``.npz``: one array per model input, named like the input (``input_ids``,
  ``attention_mask``, ...); with a single array (or an array named ``x`` for a single-input
  model) the name does not matter. For eval data an optional ``y`` array of integer labels
  (``N``) enables the accuracy delta.

:func:`bind` checks the arrays against the model's inputs and casts each to its input's dtype.
Every array holds ``N`` samples, sample axis first. An array with as many axes as the model
input has its batch axis first: sample ``i`` is fed as ``array[i:i+1]``. An array with one
axis more than the model input is fed whole, one sample at a time: sample ``i`` is
``array[i]`` (a recurrent state ``(2, 1, 128)``, a scalar sample rate).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from compiler.errors import CompileError
from edgefleet.bundle import sha256_file

if TYPE_CHECKING:
    from edgefleet.bundle import TensorSpec

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Array = npt.NDArray[Any]
Feed = dict[str, Array]

LABELS = "y"
SINGLE = "x"


@dataclass(frozen=True)
class Samples:
    """``N`` samples of every model input, by input name, in the input's dtype.

    ``batched[name]`` says whether the array's first axis is the model input's batch axis
    (a sample is ``array[i:i+1]``) or a sample axis in front of the whole input
    (a sample is ``array[i]``). ``dynamic`` is true when every input has a batch axis the model
    lets grow, so several samples may run as one batch.
    """

    arrays: Mapping[str, Array]
    batched: Mapping[str, bool]
    dynamic: bool = True

    @classmethod
    def single(cls, name: str, x: Array, *, dynamic: bool = True) -> Samples:
        return cls({name: x}, {name: True}, dynamic)

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.arrays)

    @property
    def first(self) -> Array:
        """The first input's array (the only one for a single-input model)."""
        return next(iter(self.arrays.values()))

    def one(self, index: int) -> Feed:
        """The feed of sample ``index`` alone (batch 1)."""
        return {
            name: np.ascontiguousarray(a[index : index + 1] if self.batched[name] else a[index])
            for name, a in self.arrays.items()
        }

    def chunk(self, start: int, stop: int) -> Feed:
        """Samples ``start:stop`` as one batch (only when :attr:`dynamic`)."""
        return {name: np.ascontiguousarray(a[start:stop]) for name, a in self.arrays.items()}

    def take(self, index: Sequence[int] | npt.NDArray[np.integer[Any]]) -> Samples:
        picked = {
            name: np.ascontiguousarray(a[np.asarray(index)]) for name, a in self.arrays.items()
        }
        return Samples(picked, self.batched, self.dynamic)

    def head(self, count: int) -> Samples:
        return self.take(np.arange(min(count, len(self))))

    def batch_for(self, batch: int) -> int:
        """How many samples one run of :meth:`repeat` holds: ``batch``, or 1 when the model
        takes no larger batch (a static batch of 1, as TFLite models often have)."""
        return batch if self.dynamic and batch > 1 else 1

    def repeat(self, batch: int) -> Feed:
        """A batch of ``batch`` samples (cycling through them) for timing; one sample when the
        model takes no larger batch (see :meth:`batch_for`)."""
        if self.batch_for(batch) == 1:
            return self.one(0)
        return {
            name: np.ascontiguousarray(np.resize(a, (batch, *a.shape[1:])))
            for name, a in self.arrays.items()
        }


@dataclass(frozen=True)
class Dataset:
    """Arrays (and maybe labels) read from one file, with the file's sha256; ``samples`` is
    set once the arrays are bound to the model's inputs (:func:`bind`)."""

    path: Path
    role: str
    arrays: Mapping[str, Array]
    y: IntArray | None
    sha256: str
    samples: Samples | None = field(default=None, compare=False)

    @property
    def x(self) -> FloatArray:
        """The single input's samples as float32 (``x`` when several arrays are given)."""
        raw = self.arrays.get(SINGLE, next(iter(self.arrays.values())))
        return np.ascontiguousarray(raw, dtype=np.float32)

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])


def load_dataset(path: Path, role: str) -> Dataset:
    """Read ``path`` (.npy or .npz). ``role`` ("calibration", "eval") names it in errors."""
    if not path.is_file():
        raise CompileError(f"{path}: {role} data file not found")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise CompileError(f"{path}: {role} data must be a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CompileError(f"{path}: cannot read {role} data ({exc})") from exc
    labels: npt.NDArray[np.generic] | None = None
    raw: dict[str, npt.NDArray[np.generic]]
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            raw = {key: loaded[key] for key in loaded.files if key != LABELS}
            if LABELS in loaded.files:
                labels = loaded[LABELS]
        if not raw:
            raise CompileError(f"{path}: {role} data .npz holds no input arrays")
    else:
        raw = {SINGLE: np.asarray(loaded)}
    arrays = {name: _samples(path, role, name, np.asarray(a)) for name, a in raw.items()}
    counts = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{n!r}: {c}" for n, c in counts.items())
        raise CompileError(f"{path}: {role} arrays hold different sample counts ({listed})")
    count = next(iter(counts.values()))
    y = _labels(path, labels, count) if labels is not None else None
    return Dataset(path=path, role=role, arrays=arrays, y=y, sha256=sha256_file(path))


def bind(dataset: Dataset, inputs: Sequence[TensorSpec]) -> Dataset:
    """``dataset`` with its arrays matched to the model's ``inputs`` by name, shapes checked,
    cast to each input's dtype; one clear error naming the file and the input otherwise."""
    arrays = _match_names(dataset, [spec.name for spec in inputs])
    bound: dict[str, Array] = {}
    batched: dict[str, bool] = {}
    dynamic = True
    for spec in inputs:
        array = arrays[spec.name]
        has_batch = _check_input(dataset, spec.name, array.shape, spec.shape)
        batched[spec.name] = has_batch
        dynamic = dynamic and has_batch and not isinstance(spec.shape[0], int)
        bound[spec.name] = np.ascontiguousarray(array, dtype=np.dtype(spec.dtype))
    samples = Samples(bound, batched, dynamic)
    return Dataset(dataset.path, dataset.role, bound, dataset.y, dataset.sha256, samples)


def check_shape(dataset: Dataset, input_name: str, model_shape: tuple[int | str, ...]) -> None:
    """Fail naming both shapes unless the single array fits the model input."""
    _check_input(dataset, input_name, dataset.x.shape, model_shape)


def _match_names(dataset: Dataset, names: list[str]) -> dict[str, Array]:
    given = dict(dataset.arrays)
    if len(names) == 1:
        if names[0] in given:
            return {names[0]: given[names[0]]}
        if len(given) == 1 or SINGLE in given:
            return {names[0]: given.get(SINGLE, next(iter(given.values())))}
    missing = [n for n in names if n not in given]
    extra = [n for n in given if n not in names]
    if missing or extra:
        raise CompileError(
            f"{dataset.path}: {dataset.role} data has arrays {_names(list(given))} but the "
            f"model inputs are {_names(names)}"
            + (f" (missing: {_names(missing)})" if missing else "")
            + (
                "; give an .npz with one array per input name"
                if dataset.path.suffix == ".npy"
                else ""
            )
        )
    return {n: given[n] for n in names}


def _check_input(
    dataset: Dataset, name: str, shape: tuple[int, ...], model_shape: tuple[int | str, ...]
) -> bool:
    """Whether the data's first axis is the input's batch axis (same rank) or a sample axis in
    front of the whole input (one more axis); fail naming both shapes otherwise."""
    given = tuple(int(d) for d in shape)
    model = tuple(model_shape)

    def fits(want: tuple[int | str, ...], got: tuple[int, ...]) -> bool:
        return len(want) == len(got) and all(
            isinstance(w, str) or w == g for w, g in zip(want, got, strict=True)
        )

    if len(given) == len(model) and len(model) >= 1 and fits(model[1:], given[1:]):
        return True
    if len(given) == len(model) + 1 and fits(model, given[1:]):
        return False
    expected = ("N", *model[1:])
    raise CompileError(
        f"{dataset.path}: {dataset.role} data has shape {_fmt(given)}, but the model "
        f"input {name!r} expects {_fmt(expected)} (N samples first)"
    )


def _samples(path: Path, role: str, name: str, array: npt.NDArray[np.generic]) -> Array:
    if array.dtype.kind not in "fiub":
        raise CompileError(
            f"{path}: {role} data {name!r} has dtype {array.dtype}, expected numbers"
        )
    if array.ndim < 1 or array.shape[0] == 0:
        raise CompileError(f"{path}: {role} data {name!r} holds no samples (shape {array.shape})")
    return np.ascontiguousarray(array)


def _labels(path: Path, labels: npt.NDArray[np.generic], count: int) -> IntArray:
    if labels.ndim != 1 or labels.shape[0] != count or labels.dtype.kind not in "iu":
        raise CompileError(
            f"{path}: labels 'y' must be {count} integers (one per sample), "
            f"got shape {labels.shape} dtype {labels.dtype}"
        )
    return labels.astype(np.int64)


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _fmt(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
