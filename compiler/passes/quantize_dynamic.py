"""Dynamic int8 with onnxruntime: int8 weights, activations quantized at run time. For
MatMul-, LSTM- and GRU-dominated models (transformers, recurrent nets); no calibration."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.passes.fusion_names import rename_generated_initializers
from compiler.passes.onnx_tools import first_line, model_errors
from compiler.passes.quantize_static import QuantizationError


class DynamicConfig(PassConfig):
    per_channel: bool = False
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Attention", "LSTM", "GRU")
    nodes_to_exclude: tuple[str, ...] = ()


def excluded_names(nodes: tuple[str, ...]) -> list[str]:
    """What to tell the dynamic quantizer to keep ``nodes`` in float: it first splits each
    Gemm into MatMul ``NAME_MatMul`` + Add and then checks the exclusions against the split
    names, so a Gemm is excluded under both."""
    return [*nodes, *(f"{name}_MatMul" for name in nodes)]


class QuantizeDynamic(Pass[DynamicConfig]):
    name: ClassVar[str] = "quantize_dynamic"
    version: ClassVar[int] = 2  # 2: Gemms kept in float; ORT-generated names renamed
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.ONNX})
    output_format: ClassVar[Format] = Format.ONNX_DYNAMIC
    required_features: ClassVar[frozenset[str]] = frozenset(
        {"precision:int8", "format:onnx", "runtime:onnxruntime"}
    )
    requires: ClassVar[tuple[Requirement, ...]] = (
        Requirement("onnxruntime", "pip install onnxruntime"),
    )

    def run(self, source: Artifact, out: Path, context: PassContext) -> DynamicConfig:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        try:
            quantize_dynamic(
                source.file,
                out,
                op_types_to_quantize=list(self.config.op_types),
                per_channel=self.config.per_channel,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded_names(self.config.nodes_to_exclude),
            )
            rename_generated_initializers(out)
            ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        except model_errors() as exc:
            raise QuantizationError(f"dynamic quantization failed: {first_line(exc)}") from exc
        return self.config
