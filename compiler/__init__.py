"""Model -> signed per-profile artifact bundles.

Importing this package (or :mod:`compiler.cli`) loads nothing heavy: torch, onnx and
onnxruntime are imported inside the functions that need them, so the ``edgefleet`` command
stays usable on a device that has none of them.

Layout (one concern per module, so the pass pipeline can grow here):

- :mod:`compiler.sources`   MODEL argument -> an ONNX file or a PyTorch ``module:factory``
- :mod:`compiler.data`      calibration / eval arrays (.npy, .npz), shape checks, digests
- :mod:`compiler.passes`    the typed, digestible pass config base and lineage records
- :mod:`compiler.export`    PyTorch -> ONNX (dynamic batch), ONNX import
- :mod:`compiler.recipes`   ``recipe_for(profile)``: what to build for a hardware profile
- :mod:`compiler.quantize`  onnxruntime static QDQ int8 with calibration
- :mod:`compiler.runner`    running an ONNX model on the host (onnxruntime CPU)
- :mod:`compiler.evidence`  size, error vs float, top-1 agreement, host latency, interface
- :mod:`compiler.golden`    golden samples re-checked on the device
- :mod:`compiler.package`   manifest, seal, sign, tar
- :mod:`compiler.pipeline`  orchestration of the above for several profiles
- :mod:`compiler.cli`       ``edgefleet compile``
"""

from compiler.errors import CompileError

__all__ = ["CompileError"]
