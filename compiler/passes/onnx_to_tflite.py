"""ONNX -> TFLite with ``onnx2tf``, run as a command from its own environment (it pins old
numpy, onnx and protobuf and cannot share one with the rest). Output is NHWC."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import ClassVar, Literal

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement

ONNX2TF = Requirement(
    "onnx2tf",
    "install onnx2tf (with tensorflow) in its own virtual environment and put its onnx2tf "
    "command on PATH",
    executable=True,
)


class OnnxToTfliteConfig(PassConfig):
    precision: Literal["fp32", "fp16"] = "fp32"
    static_batch: int = 1
    timeout_s: int = 900


class OnnxToTflite(Pass[OnnxToTfliteConfig]):
    name: ClassVar[str] = "onnx_to_tflite"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.ONNX})
    output_format: ClassVar[Format] = Format.TFLITE
    required_features: ClassVar[frozenset[str]] = frozenset({"format:tflite"})
    requires: ClassVar[tuple[Requirement, ...]] = (ONNX2TF,)

    def run(self, source: Artifact, out: Path, context: PassContext) -> OnnxToTfliteConfig:
        target = context.workdir / "onnx2tf"
        command = [
            "onnx2tf",
            "-i",
            str(source.file),
            "-o",
            str(target),
            "-b",
            str(self.config.static_batch),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=self.config.timeout_s, check=False
        )
        suffix = "float16" if self.config.precision == "fp16" else "float32"
        produced = sorted(target.glob(f"*_{suffix}.tflite"))
        if done.returncode != 0 or not produced:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise CompileError(f"onnx2tf failed on {source.file}: {tail[0]}")
        out.write_bytes(produced[0].read_bytes())
        return self.config
