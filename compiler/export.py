"""Bring a model into ONNX, the hub format: export from PyTorch, or import an ONNX file.

Both give a self-contained ``.onnx`` file (no external data sidecar) whose first axis, when it
is dynamic, is named ``batch`` on every graph input and output.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from compiler.errors import CompileError
from compiler.passes import PassConfig
from compiler.sources import TorchModel

if TYPE_CHECKING:
    import onnx


EXPORT_PASS = "export_onnx"
IMPORT_PASS = "import_onnx"


class ExportConfig(PassConfig):
    exporter: Literal["torch.onnx.dynamo"] = "torch.onnx.dynamo"
    opset: int = 18
    dynamic_axis: str = "batch"
    output_name: str = "output"


class ImportConfig(PassConfig):
    dynamic_axis: str = "batch"


def export_torch(model: TorchModel, out: Path, config: ExportConfig) -> Path:
    """Export with ``torch.onnx.export(dynamo=True)`` and a dynamic first axis."""
    import onnx
    import torch

    example = model.example
    if example.ndim == 0:
        raise CompileError("the factory's example input must have a batch axis (got a scalar)")
    if example.shape[0] < 2:
        # torch.export specialises a size-1 axis to a constant: give it two samples.
        example = torch.cat([example[:1], example[:1]])
    batch = torch.export.Dim(config.dynamic_axis)
    try:
        with _quiet_exporter():
            torch.onnx.export(
                model.module,
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
    _name_batch_axis(proto, config.dynamic_axis)
    onnx.save(proto, str(out))
    return out


def import_onnx(path: Path, out: Path, config: ImportConfig) -> Path:
    """Check that ``path`` is a valid ONNX model and write a normalised copy to ``out``."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path))
        if not proto.graph.node or not proto.graph.input or not proto.graph.output:
            raise CompileError(f"{path}: not an ONNX model (no graph, inputs or outputs)")
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"{path}: not an ONNX model ({reason})") from exc
    _name_batch_axis(proto, config.dynamic_axis)
    onnx.save(proto, str(out))  # external data, if any, was loaded: the copy is self-contained
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs and warns about things that do not concern the user (torchvision ops
    it skips, deprecations inside torch); keep those out of the compile output."""
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


def _name_batch_axis(proto: onnx.ModelProto, name: str) -> bool:
    """Name a dynamic first axis ``name`` on graph inputs and outputs; True if any changed."""
    changed = False
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value") and dims[0].dim_param != name:
            dims[0].dim_param = name
            changed = True
    return changed
