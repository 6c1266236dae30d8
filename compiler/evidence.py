"""Evidence that an artifact is worth shipping, measured on the host against the float model.

- ``size_bytes`` / ``float_size_bytes``: the artifact file and the fp32 ONNX model;
- ``max_abs_error``: largest absolute output difference to the float model on the eval data;
- ``top1_agreement``: share of eval samples whose arg-max class equals the float model's
  (classifier outputs ``N x C``, ``C >= 2``; otherwise ``None``);
- ``accuracy_delta``: artifact accuracy minus float accuracy, when eval labels are given;
- ``host_latency_ms``: median batch-1 latency over 50 runs after warm-up, onnxruntime CPU,
  one thread (see :mod:`compiler.runner`).

:func:`interface_of` reads the model's inputs and outputs (names, numpy dtypes, shapes with a
dynamic axis as its name, e.g. ``"batch"``) from the ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.data import FloatArray, IntArray
from compiler.runner import HostModel
from edgefleet.bundle import Evidence, ModelInterface, TensorSpec


@dataclass(frozen=True)
class Reference:
    """The float model's outputs on the eval data, computed once per compile."""

    x: FloatArray
    y: IntArray | None
    outputs: FloatArray
    size_bytes: int
    latency_ms: float

    @property
    def accuracy(self) -> float | None:
        return _accuracy(self.outputs, self.y)


def measure(artifact: HostModel, reference: Reference) -> Evidence:
    outputs = artifact.run(reference.x)
    agreement = None
    if _is_classifier(outputs):
        agreement = float(np.mean(outputs.argmax(axis=1) == reference.outputs.argmax(axis=1)))
    accuracy, float_accuracy = _accuracy(outputs, reference.y), reference.accuracy
    delta = None
    if accuracy is not None and float_accuracy is not None:
        delta = accuracy - float_accuracy
    return Evidence(
        size_bytes=artifact.path.stat().st_size,
        float_size_bytes=reference.size_bytes,
        max_abs_error=float(np.max(np.abs(outputs - reference.outputs))),
        top1_agreement=agreement,
        accuracy_delta=delta,
        host_latency_ms=artifact.latency_ms(reference.x),
    )


def interface_of(path: Path, preprocessing: str = "") -> ModelInterface:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        shape: list[int | str] = []
        for index, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            else:
                shape.append(dim.dim_param or f"dim{index}")
        dtype = np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)).name
        return TensorSpec(name=value.name, dtype=dtype, shape=tuple(shape))

    return ModelInterface(
        inputs=tuple(spec(v) for v in graph.input if v.name not in initializers),
        outputs=tuple(spec(v) for v in graph.output),
        preprocessing=preprocessing,
    )


def _is_classifier(outputs: FloatArray) -> bool:
    return outputs.ndim == 2 and outputs.shape[1] >= 2


def _accuracy(outputs: FloatArray, labels: IntArray | None) -> float | None:
    if labels is None or not _is_classifier(outputs):
        return None
    return float(np.mean(outputs.argmax(axis=1) == labels))
