"""Small helpers shared by the ONNX passes: the errors onnx/onnxruntime raise on a model they
cannot process, the model's inputs, and a calibration reader feeding all of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from compiler.data import Feed, FloatArray, Samples

if TYPE_CHECKING:
    from onnxruntime.quantization import CalibrationDataReader


def model_errors() -> tuple[type[BaseException], ...]:
    """What onnx / onnxruntime raise when a model cannot be processed or loaded."""
    import onnx
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return (
        RuntimeError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        AssertionError,
        NotImplementedError,
        onnx.checker.ValidationError,
        onnx.shape_inference.InferenceError,
        ort_state.Fail,
        ort_state.InvalidArgument,
        ort_state.InvalidGraph,
        ort_state.NotImplemented,
        ort_state.RuntimeException,
    )


def input_name(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    return str(next(v.name for v in graph.input if v.name not in initializers))


def subset(data: FloatArray, limit: int, seed: int) -> FloatArray:
    if len(data) <= limit:
        return data
    return data[_picks(len(data), limit, seed)]


def subset_samples(samples: Samples, limit: int, seed: int) -> Samples:
    """At most ``limit`` of ``samples``, picked at random (seeded), in their order."""
    if len(samples) <= limit:
        return samples
    return samples.take(_picks(len(samples), limit, seed))


def _picks(count: int, limit: int, seed: int) -> npt.NDArray[np.int64]:
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def calibration_reader(samples: Samples) -> CalibrationDataReader:
    """Feed the calibration samples one at a time, every input of the model at once (works
    for fixed batch-1 models too)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds: Iterator[Feed] = (samples.one(i) for i in range(len(samples)))

        def get_next(self) -> Feed | None:
            return next(self._feeds, None)

    return _Reader()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
