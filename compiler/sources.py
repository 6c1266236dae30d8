"""The MODEL argument: an ONNX file, a float TFLite file (``.tflite``), or a PyTorch factory
given as ``package.module:factory``.

A factory is a callable taking no arguments that returns ``(torch.nn.Module, example_input)``;
the example input is one batch (any size) of the single model input. The current directory is
put on ``sys.path`` first, like ``uvicorn`` does, so a factory in a local file works.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.errors import CompileError
from edgefleet.bundle import sha256_file
from edgefleet.errors import MissingDependencyError

if TYPE_CHECKING:
    import torch

_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


@dataclass(frozen=True)
class OnnxSource:
    spec: str
    path: Path

    def sha256(self) -> str:
        return sha256_file(self.path)


@dataclass(frozen=True)
class TfliteSource:
    """A float ``.tflite`` (a TFLite flatbuffer: ``TFL3`` at bytes 4-8): only TFLite
    profiles can build from it."""

    spec: str
    path: Path

    def sha256(self) -> str:
        return sha256_file(self.path)


@dataclass(frozen=True)
class TorchSource:
    spec: str
    module: str
    factory: str


Source = OnnxSource | TfliteSource | TorchSource

TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class TorchModel:
    """What a factory returned, checked: the module (in eval mode) and its example input."""

    module: torch.nn.Module
    example: torch.Tensor

    def sha256(self) -> str:
        """sha256 over the state_dict: names, dtypes, shapes and raw bytes, in order."""
        import torch

        digest = hashlib.sha256()
        for name, tensor in self.module.state_dict().items():
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def resolve_source(spec: str) -> Source:
    """Classify MODEL without importing anything heavy; one clear error when it is neither."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".tflite":
        return TfliteSource(spec=spec, path=_checked_tflite(spec, path))
    if path.is_file():
        return OnnxSource(spec=spec, path=path)
    if path.is_dir():
        raise CompileError(f"MODEL {spec!r}: a directory, not an ONNX file")
    kind = {".onnx": "ONNX", ".tflite": "TFLite"}.get(path.suffix.lower())
    if kind is not None:
        raise CompileError(f"MODEL {spec!r}: no such {kind} file")
    if _FACTORY.match(spec):
        module, factory = spec.split(":")
        return TorchSource(spec=spec, module=module, factory=factory)
    raise CompileError(
        f"MODEL {spec!r}: neither an existing ONNX file nor a PyTorch factory "
        "given as 'package.module:factory'"
    )


def _checked_tflite(spec: str, path: Path) -> Path:
    """``path`` when it holds a TFLite flatbuffer; one clear line when it does not."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head[4:8] != TFLITE_IDENTIFIER:
        raise CompileError(
            f"MODEL {spec!r}: not a TFLite model (no TFL3 flatbuffer identifier at bytes 4-8)"
        )
    return path


def load_torch(source: TorchSource, *, seed: int = 0) -> TorchModel:
    """Import the factory, seed torch, call it, and check that it returned (Module, Tensor)."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "compiler") from exc
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(source.module)
    except ImportError as exc:
        raise CompileError(
            f"MODEL {source.spec!r}: cannot import module {source.module!r} ({exc})"
        ) from exc
    factory: Any = getattr(module, source.factory, None)
    if not callable(factory):
        raise CompileError(
            f"MODEL {source.spec!r}: module {source.module!r} has no callable {source.factory!r}"
        )
    torch.manual_seed(seed)
    result = factory()
    if (
        not isinstance(result, tuple)
        or len(result) != 2
        or not isinstance(result[0], torch.nn.Module)
        or not isinstance(result[1], torch.Tensor)
    ):
        raise CompileError(
            f"MODEL {source.spec!r}: the factory must return (torch.nn.Module, torch.Tensor), "
            f"got {type(result).__name__}"
        )
    net, example = result
    return TorchModel(module=net.eval(), example=example.detach())
