"""ONNX -> float TFLite with ``onnx2tf``, run in its own tool environment (it pins old numpy,
onnx and protobuf and needs TensorFlow: ``edgefleet tools setup onnx2tf``). The inputs keep
their NCHW layout (onnx2tf would make them NHWC), so the user's calibration data still fits;
quantization is a separate pass (``quantize_tflite``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.toolenv import ONNX2TF, requirement


class OnnxToTfliteConfig(PassConfig):
    static_batch: int = 1
    timeout_s: int = 900


class OnnxToTflite(Pass[OnnxToTfliteConfig]):
    name: ClassVar[str] = "onnx_to_tflite"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.ONNX})
    output_format: ClassVar[Format] = Format.TFLITE
    required_features: ClassVar[frozenset[str]] = frozenset({"format:tflite"})
    requires: ClassVar[tuple[Requirement, ...]] = (requirement(ONNX2TF),)

    def run(self, source: Artifact, out: Path, context: PassContext) -> OnnxToTfliteConfig:
        ONNX2TF.run_script(
            "onnx2tf_convert.py",
            [
                "--onnx",
                str(source.file),
                "--out",
                str(out),
                "--batch",
                str(self.config.static_batch),
            ],
            timeout_s=self.config.timeout_s,
        )
        if not out.is_file():
            raise CompileError(f"onnx_to_tflite: onnx2tf wrote no model to {out}")
        return self.config
