"""An ONNX file in: checked (a graph, inputs, outputs, valid, loadable by onnxruntime) and
normalised (self-contained, dynamic first axis named ``batch``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.passes.export_onnx import name_batch_axis


class ImportConfig(PassConfig):
    dynamic_axis: str = "batch"


class ImportOnnx(Pass[ImportConfig]):
    name: ClassVar[str] = "import_onnx"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.ONNX})
    output_format: ClassVar[Format] = Format.ONNX
    requires: ClassVar[tuple[Requirement, ...]] = (
        Requirement("onnx", "pip install onnx"),
        Requirement("onnxruntime", "pip install onnxruntime"),
    )

    def run(self, source: Artifact, out: Path, context: PassContext) -> ImportConfig:
        import onnx
        from google.protobuf.message import DecodeError

        path = source.file
        try:
            proto = onnx.load(str(path))
            if not proto.graph.node or not proto.graph.input or not proto.graph.output:
                raise CompileError(f"{path}: not an ONNX model (no graph, inputs or outputs)")
            onnx.checker.check_model(proto)
        except (DecodeError, onnx.checker.ValidationError, ValueError, OSError) as exc:
            raise CompileError(f"{path}: not an ONNX model ({_first_line(exc)})") from exc
        name_batch_axis(proto, self.config.dynamic_axis)
        onnx.save(proto, str(out))  # external data, if any, was loaded: the copy is self-contained
        check_loadable(out, path)
        return self.config


def check_loadable(model: Path, named: Path) -> None:
    """Fail with one line naming the op when onnxruntime (and so no target) can run it."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    try:
        ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except (state.Fail, state.InvalidGraph, state.NotImplemented, state.InvalidArgument) as exc:
        graph = onnx.load(str(model), load_external_data=False).graph
        standard = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
        custom = sorted(
            {f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in standard}
        )
        if custom:
            raise CompileError(
                f"{named}: op {', '.join(custom)} is not supported by onnxruntime or any "
                "target profile"
            ) from exc
        raise CompileError(f"{named}: onnxruntime cannot load it ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
