"""Golden samples: the bundle's own inputs and outputs, re-checked on this device.

``golden.npz`` (written by compiler.golden) holds, for a model with one input and one output,
``inputs`` (count, *example shape) and ``outputs``; for a model with several inputs or
outputs, one array per input and per output, ``inputs/<name>`` and ``outputs/<name>``
(:func:`edgefleet.bundle.golden_key`). Every output is the artifact's own host output for one
sample run alone (batch 1). A named input array with as many axes as the model input has its
batch axis first (sample ``i`` is ``array[i:i+1]``); one with an axis more holds whole inputs
(sample ``i`` is ``array[i]``, e.g. a recurrent state). Outputs are concatenated along the
batch axis when every input has one, else stacked, as the compiler computed them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np

from edge_agent.errors import RuntimeBackendError, UpdateError
from edge_agent.runtime.base import Array
from edge_agent.serving import ServedModel
from edgefleet.bundle import GOLDEN_INPUTS, GOLDEN_OUTPUTS, TensorSpec, VerifiedBundle, golden_key

log = logging.getLogger(__name__)

T = TypeVar("T")
# per sample: (the outputs it gave by name, the expected ones by name)
Checks = list[tuple[dict[str, Array], dict[str, Array]]]


def run_golden(served: ServedModel, verified: VerifiedBundle) -> None:
    """Run the bundle's golden samples; raise UpdateError naming golden.npz on any mismatch."""
    golden = verified.manifest.golden
    name = golden.file
    try:
        with np.load(verified.golden_path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise UpdateError(f"{name}: cannot read golden samples ({exc})") from exc
    interface = verified.manifest.interface
    if len(interface.inputs) == 1 and GOLDEN_INPUTS in arrays:
        checks = _run_single(served, arrays, name)
    else:
        checks = _run_named(served, arrays, name)
    atol, rtol = golden.atol, golden.rtol
    for index, (actual, expected) in enumerate(checks):
        for output, want in expected.items():
            _compare(name, index, output, actual[output], want, atol, rtol, served.provider)
    log.info(
        "golden samples: %d of %d within atol %g, rtol %g on %s",
        len(checks),
        len(checks),
        atol,
        rtol,
        served.provider,
    )


def _run_single(served: ServedModel, arrays: Mapping[str, Array], name: str) -> Checks:
    """``inputs``/``outputs``: one input; the first output is checked (older bundles of
    single-input, several-output models hold only that one)."""
    if GOLDEN_OUTPUTS not in arrays:
        raise UpdateError(f"{name}: missing array {GOLDEN_OUTPUTS!r} (has: {sorted(arrays)})")
    inputs, expected = arrays[GOLDEN_INPUTS], arrays[GOLDEN_OUTPUTS]
    if len(inputs) != len(expected):
        raise UpdateError(f"{name}: {len(inputs)} inputs but {len(expected)} expected outputs")
    first = served.manifest.interface.outputs[0].name
    checks: Checks = []
    # One sample at a time (batch 1), as the compiler computed the expected outputs.
    for index, sample in enumerate(inputs):
        example = served.coerce(sample.tolist(), where=f"{name}: sample {index}")
        (outputs,) = _guard(name, index, functools.partial(served.run_examples, [example]))
        checks.append(({first: outputs[0]}, {first: expected[index]}))
    return checks


def _run_named(served: ServedModel, arrays: Mapping[str, Array], name: str) -> Checks:
    """``inputs/<name>``/``outputs/<name>``: every input fed by name, every output checked."""
    interface = served.manifest.interface
    feeds = {spec.name: _array(arrays, name, GOLDEN_INPUTS, spec.name) for spec in interface.inputs}
    wanted = {
        spec.name: _array(arrays, name, GOLDEN_OUTPUTS, spec.name) for spec in interface.outputs
    }
    counts = {len(a) for a in (*feeds.values(), *wanted.values())}
    if len(counts) != 1:
        sizes = {key: len(a) for key, a in arrays.items()}
        raise UpdateError(f"{name}: arrays hold different sample counts ({sizes})")
    batched = {spec.name: _batched(name, spec, feeds[spec.name]) for spec in interface.inputs}
    dtypes = {spec.name: np.dtype(spec.dtype) for spec in interface.inputs}
    concatenated = all(batched.values())
    checks: Checks = []
    for index in range(counts.pop()):
        feed = {
            key: np.ascontiguousarray(
                (a[index : index + 1] if batched[key] else a[index]).astype(dtypes[key])
            )
            for key, a in feeds.items()
        }
        outputs = _guard(name, index, functools.partial(served.prepared.run, feed))
        actual = {spec.name: out for spec, out in zip(interface.outputs, outputs, strict=True)}
        expected = {
            key: (a[index : index + 1] if concatenated else a[index]) for key, a in wanted.items()
        }
        checks.append((actual, expected))
    return checks


def _array(arrays: Mapping[str, Array], name: str, group: str, tensor: str) -> Array:
    key = golden_key(group, tensor)
    if key not in arrays:
        raise UpdateError(f"{name}: missing array {key!r} (has: {sorted(arrays)})")
    if arrays[key].ndim == 0:
        raise UpdateError(f"{name}: array {key!r} is a scalar, not samples")
    return arrays[key]


def _batched(name: str, spec: TensorSpec, array: Array) -> bool:
    """Whether the array's first axis is the input's batch axis (same rank) or a sample axis
    in front of whole inputs (one axis more)."""
    rank = len(spec.shape)
    if array.ndim == rank and rank >= 1:
        return True
    if array.ndim == rank + 1:
        return False
    key = golden_key(GOLDEN_INPUTS, spec.name)
    raise UpdateError(
        f"{name}: array {key!r} has shape {tuple(array.shape)}, which does not fit model input "
        f"{spec.name!r} of shape {tuple(spec.shape)}"
    )


def _guard(name: str, index: int, run: Callable[[], T]) -> T:
    try:
        return run()
    except RuntimeBackendError as exc:
        raise UpdateError(f"{name}: sample {index} does not run ({exc})") from exc


def _compare(
    name: str,
    index: int,
    output: str,
    got: Array,
    want: Array,
    atol: float,
    rtol: float,
    provider: str,
) -> None:
    if got.shape != want.shape:
        raise UpdateError(
            f"{name}: sample {index} output {output!r} has shape {got.shape}, expected {want.shape}"
        )
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    if not np.allclose(got64, want64, atol=atol, rtol=rtol):
        error = float(np.max(np.abs(got64 - want64)))
        raise UpdateError(
            f"{name}: sample {index} differs from the expected output {output!r} on "
            f"{provider} (max abs error {error:.3g}; atol {atol:g}, rtol {rtol:g})"
        )
