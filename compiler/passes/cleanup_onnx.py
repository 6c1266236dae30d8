"""Graph clean-up: shape inference and onnxruntime's basic graph optimisations (constant
folding, redundant node removal, Conv+BatchNorm fusion) via ``quant_pre_process``.

When symbolic shape inference fails on a model it is retried with ``skip_symbolic_shape``;
when that fails too, the model goes on unchanged. The effective config says what ran.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import ClassVar

from compiler.passes.base import Artifact, Format, Pass, PassConfig, PassContext, Requirement
from compiler.passes.onnx_tools import model_errors

log = logging.getLogger(__name__)

# What onnxruntime's symbolic shape inference dumps into the working directory when it fails;
# removed again so a compile leaves nothing in the user's directory.
_DEBUG_DUMPS = (Path("sym_shape_infer_temp.onnx"), Path("sym_shape_infer_temp.onnx.data"))


class CleanupConfig(PassConfig):
    optimize: bool = True
    skip_symbolic_shape: bool = False
    applied: bool = True


class CleanupOnnx(Pass[CleanupConfig]):
    name: ClassVar[str] = "cleanup_onnx"
    input_formats: ClassVar[frozenset[Format]] = frozenset({Format.ONNX})
    output_format: ClassVar[Format] = Format.ONNX
    requires: ClassVar[tuple[Requirement, ...]] = (
        Requirement("onnxruntime", "pip install onnxruntime"),
        Requirement("sympy", "pip install sympy"),
    )

    def run(self, source: Artifact, out: Path, context: PassContext) -> CleanupConfig:
        from onnxruntime.quantization import quant_pre_process

        config = self.config
        attempts = [True] if config.skip_symbolic_shape else [False, True]
        for skip in attempts:
            strays = [path for path in _DEBUG_DUMPS if not path.exists()]
            try:
                quant_pre_process(
                    source.file,
                    out,
                    skip_optimization=not config.optimize,
                    skip_symbolic_shape=skip,
                )
            except Exception as exc:  # see _inference_failed
                if not _inference_failed(exc):
                    raise
                log.info("quant_pre_process(skip_symbolic_shape=%s) failed: %s", skip, exc)
                continue
            finally:
                for path in strays:
                    path.unlink(missing_ok=True)
            return config.model_copy(update={"skip_symbolic_shape": skip, "applied": True})
        log.warning("graph clean-up failed; the model goes on unchanged")
        shutil.copyfile(source.file, out)
        return config.model_copy(update={"applied": False})


def _inference_failed(exc: Exception) -> bool:
    """An error onnx / onnxruntime raise on a model they cannot process; symbolic shape
    inference raises a bare ``Exception("Incomplete symbolic shape inference")`` on real models
    (PP-OCRv4's detector), so that one is recognised by its message."""
    return isinstance(exc, model_errors()) or "symbolic shape inference" in str(exc)
