"""Every user mistake ends ``edgefleet compile`` with exit code 1, one clear ``error:`` line
naming what is wrong, no traceback and no bundle. Run as a real process, through the error
boundary of ``edgefleet.cli.main``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.compiler.conftest import DigitsData, Keys

pytestmark = pytest.mark.e2e


def _compile(
    model: str, tmp_path: Path, *, profile: str = "x86-64/avx512-vnni", calibration: Path, key: Path
) -> str:
    """Run the command, check the failure is clean, and return the error message."""
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "edgefleet",
        "compile",
        model,
        "--profile",
        profile,
        "--calibration",
        str(calibration),
        "--out",
        str(out),
        "--key",
        str(key),
        "--name",
        "digits",
        "--version",
        "1.0.0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert not out.exists()  # every input is checked before anything is written
    # join wrapped lines so the assertions below do not depend on the terminal width
    return " ".join(done.stderr[done.stderr.index("error:") :].split())


def test_model_that_is_neither_a_file_nor_a_factory(
    tmp_path: Path, digits_data: DigitsData, keys: Keys
) -> None:
    message = _compile(
        "no-such-model", tmp_path, calibration=digits_data.calibration, key=keys.private
    )
    assert "'no-such-model'" in message
    assert "neither an existing ONNX file nor a PyTorch factory" in message


def test_factory_module_that_does_not_import(
    tmp_path: Path, digits_data: DigitsData, keys: Keys
) -> None:
    message = _compile(
        "no_such_pkg.models:make", tmp_path, calibration=digits_data.calibration, key=keys.private
    )
    assert "cannot import module 'no_such_pkg.models'" in message


def test_file_that_is_not_onnx(tmp_path: Path, digits_data: DigitsData, keys: Keys) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("this is a text file, not a model\n")
    message = _compile(str(fake), tmp_path, calibration=digits_data.calibration, key=keys.private)
    assert f"{fake}: not an ONNX model" in message


def test_unknown_profile(
    tmp_path: Path, float_onnx: Path, digits_data: DigitsData, keys: Keys
) -> None:
    message = _compile(
        str(float_onnx),
        tmp_path,
        profile="acme/toaster",
        calibration=digits_data.calibration,
        key=keys.private,
    )
    assert "unknown hardware profile 'acme/toaster'" in message
    assert "x86-64/avx512-vnni" in message


def test_calibration_data_of_the_wrong_shape(tmp_path: Path, float_onnx: Path, keys: Keys) -> None:
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((10, 64), dtype=np.float32))
    message = _compile(str(float_onnx), tmp_path, calibration=flat, key=keys.private)
    assert str(flat) in message
    assert "(10, 64)" in message and "(N, 1, 8, 8)" in message


def test_missing_key_file(tmp_path: Path, float_onnx: Path, digits_data: DigitsData) -> None:
    missing = tmp_path / "nowhere.key"
    message = _compile(str(float_onnx), tmp_path, calibration=digits_data.calibration, key=missing)
    assert f"{missing}: cannot read key file" in message


@pytest.mark.usefixtures("no_tool_envs")
def test_only_tflite_profiles_means_no_bundle(
    tmp_path: Path, float_onnx: Path, digits_data: DigitsData, keys: Keys
) -> None:
    message = _compile(
        str(float_onnx),
        tmp_path,
        profile="google/coral-edgetpu",
        calibration=digits_data.calibration,
        key=keys.private,
    )
    assert "no bundle was produced" in message
    assert "google/coral-edgetpu" in message and "pass 'onnx_to_tflite'" in message
    assert "onnx2tf" in message
