"""Golden samples: a few inputs with the artifact's own outputs, re-checked on the device.

For a model with one input and one output, ``golden.npz`` holds exactly two arrays:

- ``inputs``:  shape ``(count, *input_shape[1:])``, samples of the eval data (or the
  calibration data when no eval data was given), chosen as below;
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

The samples are ``count - count // 4`` spread evenly over the data plus the ``count // 4`` on
which the artifact differs most from the float model (:func:`choose_inputs`): on evenly spread
samples an int8 artifact may agree with the float model to within one output step (the digits
CNN: 0.096 against a step of 0.135), and then no tolerance that allows a device's rounding
could tell a device computing in float from one running the artifact.

A device passes when ``numpy.allclose(device_outputs, outputs, atol=manifest.golden.atol,
rtol=manifest.golden.rtol)`` for every output. The tolerance allows for the numeric divergence
between builds of the same runtime running THE SAME artifact (another CPU's int8 rounding,
other kernels, threads or graph optimizations, a GPU's fp16 arithmetic), never for the
quantization error itself (the stored outputs are the artifact's own), so a device running a
wrong or broken runtime, delegate or build fails:

- integer-quantized outputs, a ``.tflite`` with integer outputs or an ONNX graph whose every
  output comes out of a ``DequantizeLinear``: ``atol = 2.5 * the output's quantization step``
  (the largest over the outputs): 2 steps pass, 3 fail. The int8 arithmetic itself is exact;
  runtimes differ only in how they requantize (fixed-point multipliers, rounding of ties).
  Measured on the digits CNN's int8 ONNX bundles (x86, Raspberry Pi, Hexagon QDQ), onnxruntime
  CPU with 1 or 2 threads and every graph optimization level reproduces the golden outputs
  exactly (deviation 0); shifting every requantization of the graph by up to a quarter step
  (a quarter of all activations one step off, far more than any real kernel) moves the outputs
  by at most 2 steps over the 450 eval samples. The float model is up to 1.2 (9 steps) off;
- otherwise (float outputs) relative to the output magnitude ``m = max(1, max|outputs|)``:
  fp32 ``1e-3 * m``; fp16 ``1e-2 * m``, looser because a GPU (or an ARM CPU with fp16
  arithmetic) rounds every layer to fp16's 11 bits and accumulates in another order, where
  onnxruntime's x86 CPU computes fp16 graphs in float32 (the digits fp16 bundle: 5e-6 between
  thread counts and optimization levels, against an ``atol`` of 0.13); int8 with float outputs
  (dynamic-range or weight-only quantization, activations quantized at run time by kernels that
  differ between CPUs) ``5e-2 * m``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from compiler.data import FloatArray, Samples
from compiler.runner import Outputs, Runner
from edgefleet.bundle import GOLDEN_FILE, GOLDEN_INPUTS, GOLDEN_OUTPUTS, GoldenSamples, golden_key
from hardware_profiles.schema import Precision

DEFAULT_COUNT = 8

_RELATIVE_ATOL = {Precision.FP32: 1e-3, Precision.FP16: 1e-2, Precision.INT8: 5e-2}
# Quantized outputs: a device may differ by up to 2 steps of the output's scale; the half step
# more keeps float32 rounding from failing a 2-step difference ((q + 2) * s - q * s exceeds
# 2 * s by ~1e-6 for 108 of the 254 int8 values at the digits scale); 3 steps fail.
QUANTIZED_STEPS = 2.5


def choose_inputs(
    x: Samples, outputs: Outputs, float_outputs: Outputs, count: int = DEFAULT_COUNT
) -> Samples:
    """The golden samples of ``x``: ``count // 4`` on which the artifact's ``outputs`` differ
    most from the float model's, the rest spread evenly (all of ``x`` when it holds fewer).

    The telling samples make a device that computes the float model instead (a wrong runtime,
    a silent float fallback) miss by more than the tolerance; the spread ones cover the data.
    An int8 artifact of the same model calibrated on a quarter of the data stays within it
    (the digits CNN: 2.1 steps): that difference is as small as a device's rounding."""
    total = len(x)
    if total <= count:
        return x.take(np.arange(total))
    telling = _telling_order(total, outputs, float_outputs)[: count // 4]
    chosen = set(telling)
    rest = [i for i in range(total) if i not in chosen]
    spread = [rest[int(j)] for j in _spread(len(rest), count - len(telling))]
    return x.take(np.sort(np.array([*telling, *spread], dtype=np.intp)))


def _spread(total: int, count: int) -> npt.NDArray[np.intp]:
    return np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(np.intp))


def _telling_order(total: int, outputs: Outputs, float_outputs: Outputs) -> list[int]:
    """Sample indices, the largest max |artifact - float| first (outputs with a sample axis)."""
    gap = np.zeros(total)
    for name, reference in float_outputs.items():
        mine = outputs.get(name)
        if mine is None or len(mine) != total or len(reference) != total:
            continue
        diff = np.abs(mine.astype(np.float64) - reference.astype(np.float64))
        gap = np.maximum(gap, diff.reshape(total, -1).max(axis=1, initial=0.0))
    return [int(i) for i in np.argsort(-gap, kind="stable")]


def write_golden(
    directory: Path, artifact: Runner, inputs: Samples | FloatArray, precision: Precision
) -> GoldenSamples:
    """Write ``directory/golden.npz`` and return the manifest entry with its tolerance."""
    samples = artifact.samples(inputs)
    outputs = artifact.run_each_all(samples)
    atol = tolerance(artifact, outputs, precision)
    arrays: dict[str, Any]
    if len(samples.arrays) == 1 and len(outputs) == 1:
        arrays = {GOLDEN_INPUTS: samples.first, GOLDEN_OUTPUTS: next(iter(outputs.values()))}
    else:
        arrays = {golden_key(GOLDEN_INPUTS, n): a for n, a in samples.arrays.items()}
        arrays.update({golden_key(GOLDEN_OUTPUTS, n): a for n, a in outputs.items()})
    np.savez(directory / GOLDEN_FILE, **arrays)
    return GoldenSamples(file=GOLDEN_FILE, count=len(samples), atol=float(atol), rtol=0.0)


def tolerance(artifact: Runner, outputs: Outputs, precision: Precision) -> float:
    """The golden ``atol`` for ``artifact`` given its ``outputs`` (see the module docstring)."""
    steps = output_steps(artifact)
    if steps:
        return QUANTIZED_STEPS * max(steps.values())
    magnitude = max(1.0, *(float(np.max(np.abs(o))) for o in outputs.values()))
    return _RELATIVE_ATOL[precision] * magnitude


def output_steps(artifact: Runner) -> dict[str, float]:
    """The quantization step of every output when all of them are integer-quantized (a
    ``.tflite``'s integer outputs, an ONNX graph's outputs that leave a ``DequantizeLinear``
    with a constant scale), else empty: one float output makes the tolerance relative."""
    from compiler.litert_host import LiteRtModel

    if isinstance(artifact, LiteRtModel):
        return artifact.output_scales
    return _dequantized_outputs(artifact.path)


def _dequantized_outputs(path: Path) -> dict[str, float]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    constants = {i.name: i for i in graph.initializer if not i.external_data}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in graph.node for out in node.output}
    steps: dict[str, float] = {}
    for output in graph.output:
        node = producers.get(output.name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in constants:
            return {}
        scale = numpy_helper.to_array(constants[node.input[1]])
        steps[output.name] = float(np.max(np.abs(scale)))
    return steps
