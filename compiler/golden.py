"""Golden samples: a few inputs with the artifact's own outputs, re-checked on the device.

For a model with one input and one output, ``golden.npz`` holds exactly two arrays:

- ``inputs``:  shape ``(count, *input_shape[1:])``, samples taken evenly from the eval
  data (or the calibration data when no eval data was given);
- ``outputs``: the outputs of THE ARTIFACT ITSELF (not the float model) for those inputs, run
  on the host (onnxruntime's CPU provider; LiteRT for a ``.tflite``, float32 after
  dequantization), one sample at a time: ``outputs[i]`` is the artifact's output for
  ``inputs[i:i+1]``, batch axis removed; shape ``(count, *output_shape[1:])``.

A model with several inputs or outputs gets one array per input, ``inputs/<input name>``, and
one per output, ``outputs/<output name>`` (:func:`edgefleet.bundle.golden_key`), in the model's
dtypes, ``count`` samples first. An input array with as many axes as the model input has its
batch axis first (sample ``i`` is fed as ``array[i:i+1]``); one with an axis more is fed whole
(``array[i]``, e.g. a recurrent state), and then every output array is the per-sample outputs
stacked on a new first axis.

A device passes when ``numpy.allclose(device_outputs, outputs, atol=manifest.golden.atol,
rtol=manifest.golden.rtol)`` for every output. The tolerance allows for numeric divergence
between the host and the device's kernels (another CPU's int8 rounding, a GPU's TF32), never for
the quantization error itself (the stored outputs are the artifact's own, so a device running
the artifact correctly reproduces them up to kernel rounding):

- a ``.tflite`` with integer outputs (full int8): ``atol = 2 * the output's quantization step``
  (the largest step over the outputs): the device runs the same int8 graph in LiteRT, where a
  different CPU's kernels may round an accumulator to the neighbouring step, once per layer
  at most, and a wrong runtime (wrong scale, wrong zero point, float kernels) is off by many;
- otherwise scaled by the output magnitude ``m = max(1, max|outputs|)`` over all outputs:
  fp32 ``1e-3 * m``, fp16 ``1e-2 * m``, int8 (float outputs: dynamic range, weight-only)
  ``5e-2 * m``; an int8 ONNX artifact's ``atol`` is at least its max |error| vs the float
  model on these inputs (another execution provider's QDQ fusion may requantize differently).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, overload

import numpy as np

from compiler.data import FloatArray, Samples
from compiler.runner import Outputs, Runner
from edgefleet.bundle import GOLDEN_FILE, GOLDEN_INPUTS, GOLDEN_OUTPUTS, GoldenSamples, golden_key
from hardware_profiles.schema import Precision

DEFAULT_COUNT = 8

_RELATIVE_ATOL = {Precision.FP32: 1e-3, Precision.FP16: 1e-2, Precision.INT8: 5e-2}
QUANTIZED_STEPS = 2.0  # int8 outputs: steps of the output's scale a device may differ by


@overload
def select_inputs(x: FloatArray, count: int = DEFAULT_COUNT) -> FloatArray: ...
@overload
def select_inputs(x: Samples, count: int = DEFAULT_COUNT) -> Samples: ...
def select_inputs(x: FloatArray | Samples, count: int = DEFAULT_COUNT) -> FloatArray | Samples:
    """``count`` samples spread evenly over ``x`` (all of them when there are fewer)."""
    index = np.unique(np.linspace(0, len(x) - 1, num=min(count, len(x))).round().astype(int))
    if isinstance(x, Samples):
        return x.take(index)
    return np.ascontiguousarray(x[index])


def write_golden(
    directory: Path,
    artifact: Runner,
    inputs: Samples | FloatArray,
    float_outputs: Mapping[str, FloatArray] | FloatArray,
    precision: Precision,
) -> GoldenSamples:
    """Write ``directory/golden.npz`` and return the manifest entry with its tolerance.

    ``float_outputs`` are the float model's outputs for ``inputs`` (same order, by output
    name); they set the int8 tolerance and are not stored.
    """
    samples = artifact.samples(inputs)
    outputs = artifact.run_each_all(samples)
    reference = (
        float_outputs
        if isinstance(float_outputs, Mapping)
        else {artifact.output_names[0]: float_outputs}
    )
    atol = _tolerance(artifact, outputs, reference, precision)
    arrays: dict[str, Any]
    if len(samples.arrays) == 1 and len(outputs) == 1:
        arrays = {GOLDEN_INPUTS: samples.first, GOLDEN_OUTPUTS: next(iter(outputs.values()))}
    else:
        arrays = {golden_key(GOLDEN_INPUTS, n): a for n, a in samples.arrays.items()}
        arrays.update({golden_key(GOLDEN_OUTPUTS, n): a for n, a in outputs.items()})
    np.savez(directory / GOLDEN_FILE, **arrays)
    return GoldenSamples(file=GOLDEN_FILE, count=len(samples), atol=float(atol), rtol=0.0)


def _tolerance(
    artifact: Runner, outputs: Outputs, reference: Mapping[str, FloatArray], precision: Precision
) -> float:
    """The golden ``atol`` for ``artifact`` (see the module docstring)."""
    from compiler.litert_host import LiteRtModel

    scales = artifact.output_scales if isinstance(artifact, LiteRtModel) else {}
    if scales:
        return QUANTIZED_STEPS * max(scales.values())
    magnitude = max(1.0, *(float(np.max(np.abs(o))) for o in outputs.values()))
    atol = _RELATIVE_ATOL[precision] * magnitude
    if precision is Precision.INT8 and not isinstance(artifact, LiteRtModel):
        error = max(float(np.max(np.abs(outputs[n] - reference[n]))) for n in reference)
        atol = max(atol, error)
    return atol
