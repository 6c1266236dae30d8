"""What an ONNX graph is made of: op types, the kind of model (convolutional or sequence), and
the ops a profile's accelerator cannot run."""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from pathlib import Path

from hardware_profiles import HardwareProfile

_SEQUENCE_OPS = frozenset({"LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention"})
# Ops a quantized or fp16 graph adds around the original ones; accelerators that run the
# graph run these too (QNN, TensorRT), so they never count as falling back.
_ADDED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Cast"})


class GraphKind(StrEnum):
    CONV = "conv"  # convolutional: static QDQ int8
    SEQUENCE = "sequence"  # transformer / recurrent (MatMul, LSTM, GRU dominated): dynamic int8
    UNKNOWN = "unknown"  # not looked at yet (a PyTorch model before export)


def op_types(path: Path) -> Counter[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


def graph_kind(ops: Counter[str]) -> GraphKind:
    """``sequence`` when the graph has recurrent or attention ops, or when it has no
    convolution and at least four MatMul nodes (a transformer encoder); else ``conv``."""
    if any(ops[op] for op in _SEQUENCE_OPS):
        return GraphKind.SEQUENCE
    if ops["Conv"] + ops["ConvTranspose"] == 0 and ops["MatMul"] >= 4:
        return GraphKind.SEQUENCE
    return GraphKind.CONV


def fallback_ops(ops: Counter[str] | set[str], profile: HardwareProfile) -> tuple[str, ...]:
    """Op types the profile's accelerator does not run (they would fall back to the CPU);
    empty when the profile declares no accelerator op list (a CPU target runs everything)."""
    supported = profile.execution.accelerator_ops
    if not supported:
        return ()
    allowed = set(supported) | _ADDED_OPS
    return tuple(sorted(op for op in set(ops) if op not in allowed))
