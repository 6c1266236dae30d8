"""The model interface, read from the ONNX graph or a TFLite file: inputs and outputs (names,
numpy dtypes, shapes with a dynamic axis as its name, e.g. ``"batch"``). Evidence itself (size,
metric, host latency, candidates, excluded nodes, fallback ops) is measured by
:mod:`compiler.search` and assembled in :mod:`compiler.pipeline`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.bundle import ModelInterface, TensorSpec


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


def tflite_interface(path: Path, preprocessing: str = "") -> ModelInterface:
    """The interface of a ``.tflite`` model under its own tensor names: a batch axis of -1 is
    ``"batch"``; an integer tensor with a scale (full-int8 input or output) is declared
    ``float32`` with its :class:`~edgefleet.bundle.QuantParams`, which the agent's LiteRT
    runtime applies, so callers feed and get float32 as with the float model."""
    from ai_edge_litert.interpreter import Interpreter

    from edgefleet.bundle import QuantParams

    interpreter = Interpreter(str(path))

    def spec(detail: dict[str, Any]) -> TensorSpec:
        signature = detail.get("shape_signature", detail["shape"])
        shape = tuple(
            "batch" if index == 0 and int(dim) < 0 else f"dim{index}" if int(dim) < 0 else int(dim)
            for index, dim in enumerate(signature)
        )
        dtype = np.dtype(detail["dtype"])
        scale, zero = detail["quantization"]
        if dtype.kind in "iu" and scale:
            params = QuantParams(scale=float(scale), zero_point=int(zero))
            return TensorSpec(
                name=detail["name"], dtype="float32", shape=shape, quantization=params
            )
        return TensorSpec(name=detail["name"], dtype=dtype.name, shape=shape)

    return ModelInterface(
        inputs=tuple(spec(d) for d in interpreter.get_input_details()),
        outputs=tuple(spec(d) for d in interpreter.get_output_details()),
        preprocessing=preprocessing,
    )


def artifact_interface(path: Path, preprocessing: str = "") -> ModelInterface:
    """The interface of an ONNX or TFLite artifact file."""
    if path.suffix == ".tflite":
        return tflite_interface(path, preprocessing)
    return interface_of(path, preprocessing)
