"""Golden samples: the bundle's own inputs and outputs, re-checked on this device."""

from __future__ import annotations

import logging

import numpy as np

from edge_agent.errors import UpdateError
from edge_agent.runtime.base import Array
from edge_agent.serving import ServedModel
from edgefleet.bundle import GOLDEN_INPUTS, GOLDEN_OUTPUTS, VerifiedBundle

log = logging.getLogger(__name__)


def run_golden(served: ServedModel, verified: VerifiedBundle) -> None:
    """Run the bundle's golden samples; raise UpdateError naming golden.npz on any mismatch.

    ``golden.npz`` holds ``inputs`` (count, *example shape) and ``outputs`` (count, *output
    example shape), the artifact's own host outputs for batch-1 runs (see compiler.golden).
    Only the first output is checked (single-output models for now).
    """
    golden = verified.manifest.golden
    name = golden.file
    try:
        with np.load(verified.golden_path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise UpdateError(f"{name}: cannot read golden samples ({exc})") from exc
    for key in (GOLDEN_INPUTS, GOLDEN_OUTPUTS):
        if key not in arrays:
            raise UpdateError(f"{name}: missing array {key!r} (has: {sorted(arrays)})")
    inputs, expected = arrays[GOLDEN_INPUTS], arrays[GOLDEN_OUTPUTS]
    if len(inputs) != len(expected):
        raise UpdateError(f"{name}: {len(inputs)} inputs but {len(expected)} expected outputs")
    # One sample at a time (batch 1), as the compiler computed the expected outputs.
    actual: list[list[Array]] = []
    for index, sample in enumerate(inputs):
        example = served.coerce(sample.tolist(), where=f"{name}: sample {index}")
        actual.extend(served.run_examples([example]))
    atol, rtol = golden.atol, golden.rtol
    for index, (outputs, want) in enumerate(zip(actual, expected, strict=True)):
        got = outputs[0]
        if got.shape != want.shape:
            raise UpdateError(
                f"{name}: sample {index} output has shape {got.shape}, expected {want.shape}"
            )
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        if not np.allclose(got64, want64, atol=atol, rtol=rtol):
            error = float(np.max(np.abs(got64 - want64)))
            raise UpdateError(
                f"{name}: sample {index} differs from the expected output on "
                f"{served.provider} (max abs error {error:.3g}; atol {atol:g}, rtol {rtol:g})"
            )
    log.info(
        "golden samples: %d of %d within atol %g, rtol %g on %s",
        len(actual),
        len(actual),
        atol,
        rtol,
        served.provider,
    )
