"""Model -> signed per-profile artifact bundles.

Importing this package (or :mod:`compiler.cli`) loads nothing heavy: torch, onnx and
onnxruntime are imported inside the functions that need them, so the ``edgefleet`` command
stays usable on a device that has none of them.

Layout (one concern per module):

- :mod:`compiler.sources`      MODEL argument -> an ONNX file, a float ``.tflite`` or a
                                PyTorch ``module:factory``
- :mod:`compiler.data`         calibration / eval arrays (.npy, .npz), shape checks, digests
- :mod:`compiler.passes`       the Pass / Pipeline core (typed configs, formats, profile
  features, optional dependencies, lineage, content-digest cache) and one module per pass;
  :mod:`compiler.passes.registry` lists them lazily
- :mod:`compiler.recipes`      ``recipe_for(profile)``: the candidates to try for a profile
- :mod:`compiler.graph`        op types, model kind, ops a profile's accelerator cannot run
- :mod:`compiler.metrics`      metrics (built-in or user) and the accuracy bound
- :mod:`compiler.sensitivity`  which nodes suffer most from quantization
- :mod:`compiler.search`       the accuracy-guarded search over a recipe's candidates
- :mod:`compiler.tflite_route` a TFLite profile's float ``.tflite``: start and fp32 baseline
- :mod:`compiler.runner`       running an ONNX model on the host (onnxruntime CPU)
- :mod:`compiler.evidence`     the model interface read from ONNX
- :mod:`compiler.golden`       golden samples re-checked on the device
- :mod:`compiler.package`      manifest, seal, sign, tar
- :mod:`compiler.pipeline`     orchestration of the above for several profiles
- :mod:`compiler.explain`, :mod:`compiler.report`   ``--explain`` and ``--report``
- :mod:`compiler.cli`          ``edgefleet compile``
"""

from compiler.errors import CompileError

__all__ = ["CompileError"]
