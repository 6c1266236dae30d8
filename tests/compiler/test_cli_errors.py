"""Every user mistake ends ``edgefleet compile`` with exit code 1, one clear ``error:`` line
naming what is wrong, no traceback and no bundle. Run as a real process, through the error
boundary of ``edgefleet.cli.main``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hardware_profiles
from compiler.toolenv import LITERT_TORCH
from tests.compiler.conftest import DIGITS, DigitsData, Keys

pytestmark = pytest.mark.e2e


def _compile(
    model: str,
    tmp_path: Path,
    *,
    profile: str = "x86-64/avx512-vnni",
    calibration: Path,
    key: Path,
    checked_first: bool = True,
    timeout: float = 120,
) -> str:
    """Run the command, check the failure is clean, and return the error message.
    ``checked_first``: the mistake is found before anything is written (else: no bundle)."""
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
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=timeout)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    if checked_first:
        assert not out.exists()  # every input is checked before anything is written
    else:
        assert not out.exists() or not list(out.iterdir())  # no bundle
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


def _profile_copy(path: Path, tag: str, **budgets: int) -> Path:
    """The built-in Cortex-M7 profile as a YAML file of its own: another tag, other budgets."""
    text = (Path(hardware_profiles.__file__).parent / "profiles" / "arm-cortex-m7.yaml").read_text()
    text = text.replace("tag: arm/cortex-m7", f"tag: {tag}")
    for name, value in budgets.items():
        text, found = re.subn(rf"(?m)^(\s+{name}:) \d+$", rf"\g<1> {value}", text)
        assert found == 1, name
    path.write_text(text)
    return path


def test_profile_file_that_does_not_exist(
    tmp_path: Path, float_onnx: Path, digits_data: DigitsData, keys: Keys
) -> None:
    missing = tmp_path / "boards" / "my-board.yaml"
    message = _compile(
        str(float_onnx),
        tmp_path,
        profile=str(missing),
        calibration=digits_data.calibration,
        key=keys.private,
    )
    assert message == f"error: --profile {missing}: no such profile file"


def test_profile_file_that_is_not_a_valid_profile(
    tmp_path: Path, float_onnx: Path, digits_data: DigitsData, keys: Keys
) -> None:
    board = _profile_copy(tmp_path / "board.yaml", "acme/board")
    board.write_text(board.read_text().replace("max_arena_bytes: 262144", "max_arena_bytes: lots"))
    message = _compile(
        str(float_onnx),
        tmp_path,
        profile=str(board),
        calibration=digits_data.calibration,
        key=keys.private,
    )
    assert message.startswith(f"error: --profile {board}: field budgets.max_arena_bytes")


@pytest.mark.integration
@pytest.mark.skipif(not LITERT_TORCH.ready(), reason=LITERT_TORCH.hint())
def test_microcontroller_over_its_budgets_fails_naming_each_estimate_and_limit(
    tmp_path: Path, digits_data: DigitsData, keys: Keys
) -> None:
    """The Cortex-M7 profile copied with 4 KiB of flash and 1 KiB of arena: the digits CNN's
    full-int8 .tflite (about 100 KiB, arena about 2.5 KiB) fits neither, and the compile ends
    with one line naming the profile, both estimates and both limits; nothing is packed."""
    tiny = _profile_copy(
        tmp_path / "tiny-m7.yaml", "test/tiny-m7", max_model_bytes=4096, max_arena_bytes=1024
    )
    message = _compile(
        DIGITS,
        tmp_path,
        profile=str(tiny),
        calibration=digits_data.calibration,
        key=keys.private,
        checked_first=False,
        timeout=600,
    )
    assert message.startswith("error: no bundle was produced (test/tiny-m7: ")
    assert re.search(r"int8-full-tflite: model \d+ bytes, over the flash budget of 4096", message)
    arena = r"tensor arena estimate \d+ bytes \(peak at op #\d+ \w+\), over the budget of 1024"
    assert re.search(arena, message), message
