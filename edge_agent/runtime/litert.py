"""The LiteRT backend: TFLite models through ``ai_edge_litert``, else ``tflite_runtime``.

Delegates come from ``profile.execution.delegates`` in fallback order (a short name such as
``edgetpu`` maps to its shared library; anything else is passed to ``load_delegate`` as a
library path). A delegate that does not load, or that cannot take the model, is skipped
with a log line; the CPU comes last when the profile allows it. :attr:`LiteRtModel.provider`
names what runs the model: the delegate's name or ``"cpu"``.

A TFLite interpreter holds its tensors in place, so one interpreter serves one request at a
time (a lock). Batches: when the input's batch axis is dynamic (``shape_signature`` -1) the
input is resized to the batch; a static batch of 1 (Edge TPU models) runs example by
example.

Full-int8 models: an input or output the manifest declares ``float32`` with
:class:`~edgefleet.bundle.QuantParams` over an integer tensor is quantized on the way in
and dequantized on the way out with those parameters, so callers (and the golden check) feed
and get float32, as the compiler measured it.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import RuntimeBackendError
from edge_agent.runtime.base import Array
from edgefleet.bundle import Manifest, QuantParams
from edgefleet.errors import MissingDependencyError
from hardware_profiles.schema import HardwareProfile

log = logging.getLogger(__name__)

CPU = "cpu"
DELEGATE_LIBRARIES: dict[str, str] = {
    "edgetpu": {"darwin": "libedgetpu.1.dylib", "win32": "edgetpu.dll"}.get(
        sys.platform, "libedgetpu.so.1"
    ),
    "gpu": "libtensorflowlite_gpu_delegate.so",
    "hexagon": "libhexagon_interface.so",
}


def interpreter_module() -> Any:
    """``ai_edge_litert.interpreter``, else ``tflite_runtime.interpreter``."""
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingDependencyError("ai-edge-litert", "agent")


class LiteRtModel:
    """One interpreter; ``run`` is serialised by a lock, so it is safe from many threads."""

    def __init__(self, interpreter: Any, provider: str, manifest: Manifest, file: str) -> None:
        self._interpreter = interpreter
        self._provider = provider
        self._lock = threading.Lock()
        inputs = {detail["name"]: detail for detail in interpreter.get_input_details()}
        outputs = {detail["name"]: detail for detail in interpreter.get_output_details()}
        for kind, declared, actual in (
            ("inputs", manifest.interface.inputs, inputs),
            ("outputs", manifest.interface.outputs, outputs),
        ):
            missing = [spec.name for spec in declared if spec.name not in actual]
            if missing:
                raise RuntimeBackendError(
                    f"{file}: the manifest names {kind} {missing} that the model does not have "
                    f"(model {kind}: {sorted(actual)})"
                )
        self._inputs = {name: int(detail["index"]) for name, detail in inputs.items()}
        self._signatures = {
            name: tuple(int(dim) for dim in detail.get("shape_signature", detail["shape"]))
            for name, detail in inputs.items()
        }
        self._outputs = [int(outputs[spec.name]["index"]) for spec in manifest.interface.outputs]
        self._quantize = {
            spec.name: (spec.quantization, np.dtype(inputs[spec.name]["dtype"]))
            for spec in manifest.interface.inputs
            if spec.quantization is not None
        }
        self._dequantize = [spec.quantization for spec in manifest.interface.outputs]
        self._shapes: dict[str, tuple[int, ...]] = {
            name: tuple(int(dim) for dim in detail["shape"]) for name, detail in inputs.items()
        }

    @property
    def provider(self) -> str:
        return self._provider

    def run(self, feeds: Mapping[str, Array]) -> list[Array]:
        with self._lock:
            try:
                if self._resizable(feeds):
                    return self._invoke(feeds)
                return self._per_example(feeds)
            except (RuntimeError, ValueError) as exc:
                raise RuntimeBackendError(f"LiteRT run failed: {exc}") from exc

    def _resizable(self, feeds: Mapping[str, Array]) -> bool:
        """Fit the input tensors to the feeds; False when a static batch must be looped."""
        changed = False
        for name, feed in feeds.items():
            shape = tuple(int(dim) for dim in feed.shape)
            if shape == self._shapes[name]:
                continue
            signature = self._signatures[name]
            fits = len(signature) == len(shape) and all(
                want in (-1, got) for want, got in zip(signature, shape, strict=True)
            )
            if not fits:
                if signature and signature[0] == 1 and shape[1:] == signature[1:]:
                    return False
                raise ValueError(
                    f"input {name!r} has shape {list(shape)}; the model takes {list(signature)}"
                )
            self._interpreter.resize_tensor_input(self._inputs[name], list(shape), strict=True)
            self._shapes[name] = shape
            changed = True
        if changed:
            self._interpreter.allocate_tensors()
        return True

    def _invoke(self, feeds: Mapping[str, Array]) -> list[Array]:
        interpreter = self._interpreter
        for name, feed in feeds.items():
            interpreter.set_tensor(self._inputs[name], self._to_tensor(name, feed))
        interpreter.invoke()
        return [
            _dequantize(np.asarray(interpreter.get_tensor(index)), params)
            for index, params in zip(self._outputs, self._dequantize, strict=True)
        ]

    def _to_tensor(self, name: str, feed: Array) -> Array:
        """``feed`` as the model's tensor: quantized with the manifest's parameters when the
        manifest declares a float input over an integer tensor (full-int8 models)."""
        if name not in self._quantize:
            return np.ascontiguousarray(feed)
        params, dtype = self._quantize[name]
        info = np.iinfo(dtype)
        values = np.round(np.asarray(feed, dtype=np.float32) / params.scale) + params.zero_point
        return np.ascontiguousarray(np.clip(values, info.min, info.max).astype(dtype))

    def _per_example(self, feeds: Mapping[str, Array]) -> list[Array]:
        count = len(next(iter(feeds.values())))
        runs = [
            self._invoke({name: feed[index : index + 1] for name, feed in feeds.items()})
            for index in range(count)
        ]
        return [np.concatenate(parts) for parts in zip(*runs, strict=True)]


def _dequantize(values: Array, params: QuantParams | None) -> Array:
    if params is None:
        return values
    real = (values.astype(np.float32) - params.zero_point) * params.scale
    return real.astype(np.float32)


class LiteRtBackend:
    """Prepare TFLite models with the delegates that ``profile.execution`` lists."""

    name = "litert"

    def __init__(self, profile: HardwareProfile) -> None:
        self._profile = profile

    def supports(self, manifest: Manifest) -> bool:
        return manifest.format == "tflite"

    def threads(self) -> int:
        return max(1, min(self._profile.defaults.threads, os.cpu_count() or 1))

    def prepare(self, model_path: Path, manifest: Manifest) -> LiteRtModel:
        module = interpreter_module()
        tried: list[str] = []
        for delegate in self._profile.execution.delegates:
            library = DELEGATE_LIBRARIES.get(delegate, delegate)
            try:
                # load_delegate's own failure leaves a half-built Delegate whose __del__
                # raises; opening the library first fails cleanly with the loader's reason.
                ctypes.CDLL(library)
                loaded = module.load_delegate(library)
                interpreter = self._interpreter(module, model_path, [loaded])
            except (OSError, ValueError, RuntimeError) as exc:
                tried.append(f"{delegate} ({exc})")
                log.warning(
                    "LiteRT delegate %s (profile %s) is not usable: %s",
                    delegate,
                    self._profile.tag,
                    exc,
                )
                continue
            return LiteRtModel(interpreter, delegate, manifest, model_path.name)
        if tried and not self._profile.execution.allow_cpu_fallback:
            raise RuntimeBackendError(
                f"profile {self._profile.tag}: no LiteRT delegate is usable "
                f"({'; '.join(tried)}) and CPU fallback is not allowed"
            )
        try:
            interpreter = self._interpreter(module, model_path, None)
        except (OSError, ValueError, RuntimeError) as exc:
            raise RuntimeBackendError(
                f"{model_path.name}: LiteRT cannot load the model ({exc})"
            ) from exc
        if tried:
            log.warning(
                "model %s runs on the CPU, not on the profile's delegate %s (fallback)",
                manifest.name,
                self._profile.execution.delegates[0],
            )
        return LiteRtModel(interpreter, CPU, manifest, model_path.name)

    def _interpreter(self, module: Any, model_path: Path, delegates: list[Any] | None) -> Any:
        interpreter = module.Interpreter(
            model_path=str(model_path),
            experimental_delegates=delegates,
            num_threads=self.threads(),
        )
        interpreter.allocate_tensors()
        return interpreter
