"""Run a ``.tflite`` model on the host with the LiteRT interpreter, as the device would.

:class:`LiteRtModel` answers the same calls as :class:`compiler.runner.HostModel` (the
:class:`compiler.runner.Runner` base), so a TFLite artifact is searched, measured and
packaged like an ONNX one. The model's tensors may be exposed under the float reference's
input and output names (matched in order), so outputs compare name by name. int8 inputs and
outputs (full-int8 models) are quantized and dequantized with the tensor's own scale and zero
point: callers feed and get float32. The batch is static: samples are run in chunks of it, the
last one padded. The interpreter runs one thread, like the onnxruntime host sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.data import Feed, FloatArray, Samples
from compiler.runner import HOST_THREADS, Outputs, Runner


class LiteRtModel(Runner):
    """A prepared TFLite model (static batch) on the host CPU."""

    runtime = "LiteRT CPU"

    def __init__(
        self,
        path: Path,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self._interpreter: Any = Interpreter(str(path), num_threads=HOST_THREADS)
        self._interpreter.allocate_tensors()
        inputs: list[dict[str, Any]] = self._interpreter.get_input_details()
        outputs: list[dict[str, Any]] = self._interpreter.get_output_details()
        in_names = _names(input_names, inputs, "inputs")
        out_names = _names(output_names, outputs, "outputs")
        self._inputs = dict(zip(in_names, inputs, strict=True))
        self._outputs = dict(zip(out_names, outputs, strict=True))
        self.input_names: tuple[str, ...] = tuple(in_names)
        self.input_name = in_names[0]
        self.output_names: tuple[str, ...] = tuple(out_names)
        self._chunk = int(inputs[0]["shape"][0]) if len(inputs[0]["shape"]) else 1
        self.dynamic_batch = False

    @property
    def output_scales(self) -> dict[str, float]:
        """The quantization step of each integer output (full-int8 models); float outputs are
        left out."""
        scales: dict[str, float] = {}
        for name, detail in self._outputs.items():
            scale = float(detail["quantization"][0])
            if np.dtype(detail["dtype"]).kind in "iu" and scale:
                scales[name] = scale
        return scales

    def run_all(self, x: FloatArray | Samples) -> Outputs:
        """Every output for every sample, in chunks of the static batch."""
        samples = self.samples(x)
        if not all(samples.batched.values()):
            return self.run_each_all(samples)
        parts = [
            self.run_feed(samples.chunk(i, i + self._chunk))
            for i in range(0, len(samples), self._chunk)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    @property
    def input_dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = np.dtype(self._inputs[self.input_name]["dtype"])
        return dtype

    def run_feed(self, feed: Feed) -> Outputs:
        """Outputs for one feed (float32 in and out): fed in chunks of the static batch, the
        last one padded and the padding's outputs dropped."""
        rows = len(next(iter(feed.values())))
        if rows > self._chunk:
            parts = [
                self.run_feed({n: a[i : i + self._chunk] for n, a in feed.items()})
                for i in range(0, rows, self._chunk)
            ]
            return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}
        for name, value in feed.items():
            detail = self._inputs[name]
            if rows < self._chunk and len(detail["shape"]) == value.ndim:
                padded = np.zeros((self._chunk, *value.shape[1:]), dtype=value.dtype)
                padded[:rows] = value
                value = padded
            self._interpreter.set_tensor(detail["index"], _to_tensor(value, detail))
        self._interpreter.invoke()
        return {
            name: _from_tensor(self._interpreter.get_tensor(detail["index"]), detail)[:rows]
            for name, detail in self._outputs.items()
        }


def _names(given: Sequence[str] | None, details: list[dict[str, Any]], kind: str) -> list[str]:
    """``given`` names for the model's tensors in order (the model's own when none)."""
    own = [str(d["name"]) for d in details]
    if given is None:
        return own
    if len(given) != len(own):
        from compiler.errors import CompileError

        raise CompileError(
            f"the TFLite model has {len(own)} {kind} ({', '.join(own)}), "
            f"the float model {len(given)} ({', '.join(given)})"
        )
    return list(given)


def _to_tensor(x: Any, detail: dict[str, Any]) -> Any:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu" or np.dtype(x.dtype).kind in "iu":
        return np.ascontiguousarray(x, dtype=dtype)
    scale, zero = detail["quantization"]
    if scale == 0:
        return np.ascontiguousarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    values = np.round(np.asarray(x, dtype=np.float32) / scale) + zero
    return np.ascontiguousarray(np.clip(values, info.min, info.max).astype(dtype))


def _from_tensor(y: Any, detail: dict[str, Any]) -> FloatArray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return np.asarray(y, dtype=np.float32)
    scale, zero = detail["quantization"]
    if scale == 0:
        return np.asarray(y, dtype=np.float32)
    values: FloatArray = ((np.asarray(y, dtype=np.float32) - zero) * scale).astype(np.float32)
    return values
