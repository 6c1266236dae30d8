"""PyTorch -> ONNX with ``torch.onnx.export(dynamo=True)``, a dynamic batch axis named
``batch`` on every graph input and output, and no external-data sidecar."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from compiler.errors import CompileError
from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement

if TYPE_CHECKING:
    import onnx


class ExportConfig(PassConfig):
    exporter: Literal["torch.onnx.dynamo"] = "torch.onnx.dynamo"
    opset: int = 18
    dynamic_axis: str = "batch"
    output_name: str = "output"


class ExportOnnx(Pass[ExportConfig]):
    name: ClassVar[str] = "export_onnx"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.TORCH})
    output_format: ClassVar[Format] = Format.ONNX
    requires: ClassVar[tuple[Requirement, ...]] = (
        Requirement("torch", "pip install torch"),
        Requirement("onnxscript", "pip install onnxscript"),
        Requirement("onnx", "pip install onnx"),
    )

    def run(self, source: Artifact, out: Path, context: PassContext) -> ExportConfig:
        if context.torch_model is None:
            raise CompileError("export_onnx needs the PyTorch module")
        import onnx
        import torch

        config = self.config
        example = context.torch_model.example
        module = context.torch_model.module
        if source.path is not None:  # a pruned or distilled module a previous pass wrote
            from compiler.torch_state import load_module

            module = load_module(source.path, module)
        if example.ndim == 0:
            raise CompileError("the factory's example input must have a batch axis (got a scalar)")
        if example.shape[0] < 2:
            # torch.export specialises a size-1 axis to a constant: give it two samples.
            example = torch.cat([example[:1], example[:1]])
        batch = torch.export.Dim(config.dynamic_axis)
        try:
            with _quiet_exporter():
                torch.onnx.export(
                    module,
                    (example,),
                    str(out),
                    dynamo=True,
                    external_data=False,
                    opset_version=config.opset,
                    dynamic_shapes=({0: batch},),
                    output_names=[config.output_name],
                    verbose=False,
                )
        except torch.onnx.OnnxExporterError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CompileError(f"the PyTorch model cannot be exported to ONNX: {first}") from exc
        proto = onnx.load(str(out))
        name_batch_axis(proto, config.dynamic_axis)
        onnx.save(proto, str(out))
        return config


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's own logging and deprecation warnings out of the compile output."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        exporter_log.setLevel(level)


def name_batch_axis(proto: onnx.ModelProto, name: str) -> bool:
    """Name a dynamic first axis ``name`` on graph inputs and outputs; True if any changed."""
    changed = False
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value") and dims[0].dim_param != name:
            dims[0].dim_param = name
            changed = True
    return changed
