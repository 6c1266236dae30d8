"""fp32 -> fp16 ONNX for GPU profiles, inputs and outputs kept fp32 (``keep_io_types``).

The provider options the artifact is meant to run with (TensorRT fp16, CUDA; from
:data:`PROVIDER_OPTIONS` for the profile's providers) ride in the config, so the bundle's
lineage records them. Accuracy is checked on the host CPU, which
computes fp16 graphs in fp32: fp16 brings no CPU speed-up, only on the GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.passes.onnx_tools import first_line, model_errors
from compiler.passes.quantize_static import QuantizationError

PROVIDER_OPTIONS: dict[str, dict[str, str]] = {
    "TensorrtExecutionProvider": {"trt_fp16_enable": "1", "trt_engine_cache_enable": "1"},
    "CUDAExecutionProvider": {
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1",
    },
}


class Fp16Config(PassConfig):
    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = ()
    provider_options: dict[str, dict[str, str]] = Field(default_factory=dict)


class ConvertFp16(Pass[Fp16Config]):
    name: ClassVar[str] = "convert_fp16"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.ONNX})
    output_format: ClassVar[Format] = Format.ONNX_FP16
    required_features: ClassVar[frozenset[str]] = frozenset({"precision:fp16", "format:onnx"})
    requires: ClassVar[tuple[Requirement, ...]] = (
        Requirement("onnxruntime", "pip install onnxruntime"),
    )

    def run(self, source: Artifact, out: Path, context: PassContext) -> Fp16Config:
        import onnx
        import onnxruntime as ort
        from onnxruntime.transformers.float16 import convert_float_to_float16

        try:
            model = onnx.load(str(source.file))
            kwargs = (
                {"op_block_list": list(self.config.op_block_list)}
                if self.config.op_block_list
                else {}
            )
            converted = convert_float_to_float16(
                model, keep_io_types=self.config.keep_io_types, **kwargs
            )
            onnx.save(converted, str(out))
            ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        except model_errors() as exc:
            raise QuantizationError(f"fp16 conversion failed: {first_line(exc)}") from exc
        return self.config
