"""Calibration and evaluation data: loading, shape checks against the model, digests.

Accepted files:

- ``.npy``: one array, ``N x input shape`` (the first axis is the sample axis);
- ``.npz``: the array under key ``x`` if present, otherwise the first array; for eval data an
  optional ``y`` array of integer labels (``N``) enables the accuracy delta.

Arrays are cast to float32 (the dtype of the model input for now).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from compiler.errors import CompileError
from edgefleet.bundle import sha256_file

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Dataset:
    """Samples (and maybe labels) read from one file, with the file's sha256."""

    path: Path
    role: str
    x: FloatArray
    y: IntArray | None
    sha256: str

    def __len__(self) -> int:
        return int(self.x.shape[0])


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
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            if not keys:
                raise CompileError(f"{path}: {role} data .npz holds no arrays")
            raw = loaded["x"] if "x" in keys else loaded[keys[0]]
            if "y" in keys:
                labels = loaded["y"]
    else:
        raw = loaded
    x = _samples(path, role, np.asarray(raw))
    y = _labels(path, labels, len(x)) if labels is not None else None
    return Dataset(path=path, role=role, x=x, y=y, sha256=sha256_file(path))


def check_shape(dataset: Dataset, input_name: str, model_shape: tuple[int | str, ...]) -> None:
    """Fail naming both shapes unless every fixed non-batch axis of the model matches."""
    given = tuple(int(d) for d in dataset.x.shape)
    fixed_match = len(given) == len(model_shape) and all(
        isinstance(want, str) or want == got
        for want, got in zip(model_shape[1:], given[1:], strict=True)
    )
    if not fixed_match:
        expected = ("N", *model_shape[1:])
        raise CompileError(
            f"{dataset.path}: {dataset.role} data has shape {_fmt(given)}, but the model "
            f"input {input_name!r} expects {_fmt(expected)} (N samples first)"
        )


def _samples(path: Path, role: str, array: npt.NDArray[np.generic]) -> FloatArray:
    if array.dtype.kind not in "fiub":
        raise CompileError(f"{path}: {role} data has dtype {array.dtype}, expected numbers")
    if array.ndim < 1 or array.shape[0] == 0:
        raise CompileError(f"{path}: {role} data holds no samples (shape {array.shape})")
    return np.ascontiguousarray(array, dtype=np.float32)


def _labels(path: Path, labels: npt.NDArray[np.generic], count: int) -> IntArray:
    if labels.ndim != 1 or labels.shape[0] != count or labels.dtype.kind not in "iu":
        raise CompileError(
            f"{path}: labels 'y' must be {count} integers (one per sample), "
            f"got shape {labels.shape} dtype {labels.dtype}"
        )
    return labels.astype(np.int64)


def _fmt(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
