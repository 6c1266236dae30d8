"""The model interface, read from the ONNX graph: inputs and outputs (names, numpy dtypes,
shapes with a dynamic axis as its name, e.g. ``"batch"``). Evidence itself (size, metric,
host latency, candidates, excluded nodes, fallback ops) is measured by :mod:`compiler.search`
and assembled in :mod:`compiler.pipeline`.
"""

from __future__ import annotations

from pathlib import Path

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
