"""Which nodes suffer most from quantization: run the float model and the quantized one on the
same few inputs with every intermediate tensor exposed, and score each node by how much the
relative error grows across it (error of its output minus the worst error of its inputs).

A node whose input carries outliers (one channel ~1000x the others) scores high: quantizing
that input to 8 bits wipes out the small channels. Keeping such a node in float (the
quantizer's ``nodes_to_exclude``) also keeps its input in float.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compiler.data import Array, FloatArray, Samples

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
SAMPLES = 32
UNBATCHED_SAMPLES = 8  # run one at a time when the model takes no batch


@dataclass(frozen=True)
class Sensitivity:
    node: str
    op_type: str
    score: float  # growth of the relative L2 error across the node
    output_error: float


def rank_nodes(
    float_model: Path,
    quantized: Path,
    x: FloatArray | Samples,
    op_types: frozenset[str] | None = None,
) -> list[Sensitivity]:
    """Nodes of ``float_model`` (names as the quantizer sees them), most sensitive first;
    only nodes of ``op_types`` when given (what a dynamic quantizer quantizes: keeping any
    other node in float changes nothing)."""
    import onnx

    float_proto = onnx.load(str(float_model))
    quant_proto = onnx.load(str(quantized))
    quant_ops = {n.name: n.op_type for n in quant_proto.graph.node if n.op_type not in _QDQ}
    produced_in_quant = {t for n in quant_proto.graph.node for t in n.output}
    # A node the quantizer kept (static QDQ keeps names), or, for a dynamic quantizer
    # (``op_types``), one it replaced while keeping its output tensor (MatMul -> MatMulInteger
    # ... Mul writing the MatMul's output). A node of ``op_types`` still there as itself was
    # left in float (an activation x activation MatMul): keeping it in float changes nothing.
    candidates = [
        n
        for n in float_proto.graph.node
        if n.op_type not in _QDQ
        and (
            n.name in quant_ops
            if op_types is None
            else n.op_type in op_types
            and quant_ops.get(n.name) != n.op_type
            and any(t in produced_in_quant for t in n.output)
        )
    ]
    # Each candidate's outputs, and its activation inputs: the growth of the error across a
    # node is its own doing, the error it receives is not.
    initializers = {i.name for i in float_proto.graph.initializer}
    produced = {t for n in float_proto.graph.node for t in n.output}
    fed = {t for n in candidates for t in n.input if t in produced and t not in initializers}
    written = {t for n in candidates for t in n.output}
    tensors = sorted((fed | written) & produced_in_quant)
    sample = x if isinstance(x, Samples) else Samples.single(_first_input(float_proto), x)
    sample = sample.head(SAMPLES if sample.dynamic else UNBATCHED_SAMPLES)
    reference = _run_exposed(float_proto, tensors, sample)
    actual = _run_exposed(quant_proto, tensors, sample)
    error: dict[str, float] = {}
    for name in tensors:
        f, q = reference.get(name), actual.get(name)
        if f is None or q is None or f.shape != q.shape or f.dtype.kind != "f":
            continue
        norm = float(np.linalg.norm(f))
        error[name] = float(np.linalg.norm(q.astype(np.float64) - f)) / max(norm, 1e-12)
    ranked: list[Sensitivity] = []
    for node in candidates:
        outputs = [error[t] for t in node.output if t in error]
        if not outputs:
            continue
        inputs = [error[t] for t in node.input if t in error]
        out_err = max(outputs)
        ranked.append(
            Sensitivity(node.name, node.op_type, out_err - max(inputs, default=0.0), out_err)
        )
    ranked.sort(key=lambda s: s.score, reverse=True)
    return ranked


def _first_input(proto: onnx.ModelProto) -> str:
    initializers = {i.name for i in proto.graph.initializer}
    return str(next(v.name for v in proto.graph.input if v.name not in initializers))


def _run_exposed(proto: onnx.ModelProto, tensors: list[str], x: Samples) -> dict[str, Array]:
    """Run ``proto`` with ``tensors`` added as graph outputs; map name -> value."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    existing = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    wanted = set(tensors)
    feeds = [x.chunk(0, len(x))] if x.dynamic else [x.one(i) for i in range(len(x))]
    runs = [session.run(None, feed) for feed in feeds]
    found: dict[str, Array] = {}
    for index, name in enumerate(names):
        if name not in wanted:
            continue
        values = [np.asarray(run[index]) for run in runs]
        if len({v.shape for v in values}) == 1:
            found[name] = values[0] if len(values) == 1 else np.stack(values)
    return found


# Ops the QDQ quantizer handles by quantizing their output too (activations, data movement):
# keeping a node in float means keeping such producers of its inputs in float as well, or
# their quantized output would still feed it.
_PASS_THROUGH = frozenset(
    {
        "Relu",
        "Clip",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Gelu",
        "Reshape",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Resize",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Concat",
        "Split",
        "Gather",
        "Slice",
        "Pad",
        "Expand",
        "Tile",
        "Softmax",
        "ReduceMean",
        "Where",
        "Add",
        "Mul",
        "Sub",
        "Div",
    }
)


def keep_in_float(float_model: Path, nodes: tuple[str, ...]) -> tuple[str, ...]:
    """``nodes`` plus the pass-through producers whose outputs feed only kept nodes."""
    import onnx

    graph = onnx.load(str(float_model), load_external_data=False).graph
    by_output = {t: n for n in graph.node for t in n.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node.name)
    kept = list(dict.fromkeys(nodes))
    queue = [n for n in graph.node if n.name in set(kept)]
    while queue:
        node = queue.pop()
        for tensor in node.input:
            producer = by_output.get(tensor)
            if (
                producer is None
                or producer.name in kept
                or producer.op_type not in _PASS_THROUGH
                or not all(c in kept for c in consumers.get(tensor, []))
            ):
                continue
            kept.append(producer.name)
            queue.append(producer)
    return tuple(kept)
