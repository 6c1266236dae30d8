"""A float ``.tflite`` as MODEL: ``edgefleet compile model.tflite --profile <TFLite profile>``
quantizes it with ai-edge-quantizer, scores the variants against the ``.tflite`` itself in
LiteRT and writes signed bundles; what cannot work fails in one line. Real files, the real CLI.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from compiler.toolenv import LITERT_TORCH
from edgefleet.bundle import VerifiedBundle, verify_bundle
from tests.compiler.conftest import DIGITS, DigitsData, Keys
from tests.compiler.test_cli_errors import _compile
from tests.edge_agent.helpers import write_tiny_tflite

CORAL = "google/coral-edgetpu"
PI_LITERT = "raspberry-pi/4b-litert"


@pytest.fixture(scope="module")
def digits_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN as a float ``.tflite`` (litert-torch), as a user would bring it."""
    if not LITERT_TORCH.ready():
        pytest.skip(LITERT_TORCH.hint())
    from compiler.passes.base import Artifact, Format, PassContext
    from compiler.passes.torch_to_tflite import TorchToTflite, TorchToTfliteConfig
    from compiler.sources import TorchSource, load_torch, resolve_source

    spec = resolve_source(DIGITS)
    assert isinstance(spec, TorchSource)
    model = load_torch(spec, seed=0)
    work = tmp_path_factory.mktemp("digits-tflite")
    path = work / "digits.tflite"
    context = PassContext(workdir=work, torch_model=model)
    TorchToTflite(TorchToTfliteConfig()).run(Artifact(Format.TORCH, "digits"), path, context)
    return path


@pytest.fixture(scope="module")
def bundles(
    tmp_path_factory: pytest.TempPathFactory,
    digits_tflite: Path,
    digits_data: DigitsData,
    keys: Keys,
) -> dict[str, VerifiedBundle]:
    from edgefleet.cli import app

    out = tmp_path_factory.mktemp("tflite-input-bundles")
    args = ["compile", str(digits_tflite), "--profile", CORAL, "--profile", PI_LITERT]
    args += ["--calibration", str(digits_data.calibration), "--eval", str(digits_data.evaluation)]
    args += ["--out", str(out), "--key", str(keys.private), "--name", "digits"]
    # speed rule off: the digits CNN takes microseconds, and the choice must not depend on load
    args += ["--version", "1.0.0", "--quantization", "dynamic", "--no-speed-check"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    # the float reference is the user's .tflite, timed in LiteRT
    assert "on host (LiteRT CPU, 1 thread)" in result.output
    found: dict[str, VerifiedBundle] = {}
    for tag in (CORAL, PI_LITERT):
        directory = out / f"digits-1.0.0-{tag.replace('/', '_')}"
        found[tag] = verify_bundle(directory, [keys.verify])
    return found


def test_a_tflite_becomes_a_full_int8_bundle_for_the_edge_tpu(
    bundles: dict[str, VerifiedBundle], digits_tflite: Path
) -> None:
    """``--quantization dynamic`` does not apply to the Edge TPU, which takes only full int8:
    calibrated on the representative data, int8 input and output."""
    from compiler.litert_host import LiteRtModel

    manifest = bundles[CORAL].manifest
    assert manifest.format == "tflite" and manifest.precision == "int8"
    assert [p.name for p in manifest.lineage.passes] == ["quantize_tflite"]
    assert manifest.lineage.passes[0].config["recipe"] == "static_wi8_ai8"
    digest = hashlib.sha256(digits_tflite.read_bytes()).hexdigest()
    assert manifest.lineage.source_model_sha256 == digest
    assert LiteRtModel(bundles[CORAL].model_path).input_dtype == np.int8
    evidence = manifest.evidence
    assert evidence.float_size_bytes == digits_tflite.stat().st_size
    assert evidence.size_bytes / evidence.float_size_bytes <= 0.30
    assert evidence.top1_agreement is not None and evidence.top1_agreement >= 0.97


def test_a_tflite_becomes_a_dynamic_range_bundle_for_a_cpu(
    bundles: dict[str, VerifiedBundle],
) -> None:
    manifest = bundles[PI_LITERT].manifest
    assert manifest.precision == "int8"
    (pass_record,) = manifest.lineage.passes
    assert pass_record.config["recipe"] == "dynamic_wi8_afp32"
    evidence = manifest.evidence
    assert evidence.candidates[0].name == "int8-dynamic-tflite"
    assert evidence.max_abs_error is not None and evidence.max_abs_error < 1.0
    assert evidence.accuracy_delta is not None and evidence.accuracy_delta >= -0.01


def test_an_onnx_profile_given_a_tflite_says_what_to_do(
    tmp_path: Path, digits_data: DigitsData, keys: Keys
) -> None:
    model = write_tiny_tflite(tmp_path / "tiny.tflite")
    message = _compile(str(model), tmp_path, calibration=digits_data.calibration, key=keys.private)
    assert "x86-64/avx512-vnni runs ONNX models" in message
    assert "is a TFLite model" in message and "a TFLite profile" in message


def test_a_tflite_file_that_is_not_a_flatbuffer(
    tmp_path: Path, digits_data: DigitsData, keys: Keys
) -> None:
    fake = tmp_path / "model.tflite"
    fake.write_text("this is a text file, not a model\n")
    message = _compile(
        str(fake), tmp_path, profile=CORAL, calibration=digits_data.calibration, key=keys.private
    )
    assert f"{fake}" in message and "not a TFLite model" in message
