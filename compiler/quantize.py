"""Static QDQ int8 quantization with onnxruntime, calibrated on the user's data.

``quant_pre_process`` (shape inference + graph optimisation) runs first; when symbolic shape
inference fails on a model it is retried with ``skip_symbolic_shape=True``, and when that fails
too the model is quantized as it is. The config returned records what actually ran.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from compiler.data import FloatArray
from compiler.errors import CompileError
from compiler.passes import PassConfig

if TYPE_CHECKING:
    from onnxruntime.quantization import CalibrationDataReader

log = logging.getLogger(__name__)

QUANTIZE_PASS = "quantize_static_qdq"


class StaticQdqConfig(PassConfig):
    per_channel: bool = True
    activations: Literal["int8", "uint8"] = "uint8"
    weights: Literal["int8", "uint8"] = "int8"
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    max_calibration_samples: int = 512
    seed: int = 0
    pre_process: bool = True
    skip_symbolic_shape: bool = False


class QuantizationError(CompileError):
    """The quantizer could not produce a loadable int8 model; the caller falls back to fp32."""


def quantize_static_qdq(
    source: Path,
    out: Path,
    *,
    input_name: str,
    calibration: FloatArray,
    config: StaticQdqConfig,
    workdir: Path,
) -> StaticQdqConfig:
    """Write the int8 QDQ model to ``out``; return the config as it effectively ran."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    errors = _quantizer_errors()
    model_in, effective = _pre_process(source, workdir / "preprocessed.onnx", config, errors)
    samples = _subset(calibration, config.max_calibration_samples, config.seed)
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    try:
        quantize_static(
            model_in,
            out,
            _reader(input_name, samples),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=types[config.activations],
            weight_type=types[config.weights],
            calibrate_method=methods[config.calibrate_method],
        )
        ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    except errors as exc:
        raise QuantizationError(f"static QDQ quantization failed: {_first_line(exc)}") from exc
    return effective


def _pre_process(
    source: Path,
    target: Path,
    config: StaticQdqConfig,
    errors: tuple[type[BaseException], ...],
) -> tuple[Path, StaticQdqConfig]:
    from onnxruntime.quantization import quant_pre_process

    if not config.pre_process:
        return source, config
    attempts = [config.skip_symbolic_shape] if config.skip_symbolic_shape else [False, True]
    for skip in attempts:
        try:
            quant_pre_process(source, target, skip_symbolic_shape=skip)
        except errors as exc:
            log.info("quant_pre_process(skip_symbolic_shape=%s) failed: %s", skip, exc)
            continue
        return target, config.model_copy(update={"skip_symbolic_shape": skip})
    log.warning("quant_pre_process failed; quantizing the model without pre-processing")
    return source, config.model_copy(update={"pre_process": False})


def _subset(data: FloatArray, limit: int, seed: int) -> FloatArray:
    if len(data) <= limit:
        return data
    index = np.sort(np.random.default_rng(seed).choice(len(data), size=limit, replace=False))
    return data[index]


def _reader(input_name: str, samples: FloatArray) -> CalibrationDataReader:
    """Feed the calibration samples one at a time (works for fixed batch-1 models too)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, FloatArray]] = (
                {input_name: samples[i : i + 1]} for i in range(len(samples))
            )

        def get_next(self) -> dict[str, FloatArray] | None:
            return next(self._feeds, None)

    return _Reader()


def _quantizer_errors() -> tuple[type[BaseException], ...]:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
