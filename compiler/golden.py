"""Golden samples: a few inputs with the artifact's own outputs, re-checked on the device.

``golden.npz`` holds exactly two arrays (single-input, single-output models for now):

- ``inputs``:  float32, shape ``(count, *input_shape[1:])``, samples taken evenly from the eval
  data (or the calibration data when no eval data was given);
- ``outputs``: the outputs of THE ARTIFACT ITSELF (not the float model) for those inputs, run
  on the host with onnxruntime's CPU provider, one sample at a time: ``outputs[i]`` is the
  artifact's output for ``inputs[i:i+1]``, batch axis removed; shape ``(count, *output_shape[1:])``.

A device passes when ``numpy.allclose(device_outputs, outputs, atol=manifest.golden.atol,
rtol=manifest.golden.rtol)``. The tolerance allows for numeric divergence between the host and
the device's kernels (another CPU's int8 rounding, a GPU's TF32), scaled by the output
magnitude ``m = max(1, max|outputs|)``:

- fp32: ``atol = 1e-3 * m``;
- fp16: ``atol = 1e-2 * m``;
- int8: ``atol = max(5e-2 * m, the artifact's max |error| vs the float model on these inputs)``:
  a device within the quantization error of the host is as good as the quantization itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compiler.data import FloatArray
from compiler.runner import HostModel
from edgefleet.bundle import GOLDEN_FILE, GOLDEN_INPUTS, GOLDEN_OUTPUTS, GoldenSamples
from hardware_profiles.schema import Precision

DEFAULT_COUNT = 8

_RELATIVE_ATOL = {Precision.FP32: 1e-3, Precision.FP16: 1e-2, Precision.INT8: 5e-2}


def select_inputs(x: FloatArray, count: int = DEFAULT_COUNT) -> FloatArray:
    """``count`` samples spread evenly over ``x`` (all of them when there are fewer)."""
    index = np.unique(np.linspace(0, len(x) - 1, num=min(count, len(x))).round().astype(int))
    return np.ascontiguousarray(x[index])


def write_golden(
    directory: Path,
    artifact: HostModel,
    inputs: FloatArray,
    float_outputs: FloatArray,
    precision: Precision,
) -> GoldenSamples:
    """Write ``directory/golden.npz`` and return the manifest entry with its tolerance.

    ``float_outputs`` are the float model's outputs for ``inputs`` (same order); they set the
    int8 tolerance and are not stored.
    """
    outputs = artifact.run_each(inputs)
    magnitude = max(1.0, float(np.max(np.abs(outputs))))
    atol = _RELATIVE_ATOL[precision] * magnitude
    if precision is Precision.INT8:
        atol = max(atol, float(np.max(np.abs(outputs - float_outputs))))
    arrays: dict[str, Any] = {GOLDEN_INPUTS: inputs, GOLDEN_OUTPUTS: outputs}
    np.savez(directory / GOLDEN_FILE, **arrays)
    return GoldenSamples(file=GOLDEN_FILE, count=len(inputs), atol=float(atol), rtol=0.0)
