"""The digits demo, compiled once per session through the real CLI, real torch, real onnxruntime.

Training happens once per process (``compiler.examples.digits`` caches the trained weights), so
the in-process compile and the float ONNX export share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from edgefleet.bundle import VerifyKey, generate_key_pair, load_verify_key

if TYPE_CHECKING:
    from compiler.passes.base import PassContext
    from compiler.sources import TorchModel

DIGITS = "compiler.examples.digits:trained_cnn"
INT8_PROFILES = ("x86-64/avx512-vnni", "raspberry-pi/4b")
FALLBACK_PROFILE = "nvidia/jetson-orin-nano"  # fp16 preferred, fp32 fallback
TFLITE_PROFILE = "google/coral-edgetpu"
TOOLS_ENV = "EDGEFLEET_TOOLS_DIR"


@dataclass(frozen=True)
class DigitsData:
    calibration: Path
    evaluation: Path


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path

    @property
    def verify(self) -> VerifyKey:
        return load_verify_key(self.public)


@dataclass(frozen=True)
class Compiled:
    out: Path
    stdout: str
    stderr: str

    def bundle(self, tag: str, name: str = "digits", version: str = "1.0.0") -> Path:
        return self.out / f"{name}-{version}-{tag.replace('/', '_')}"


@pytest.fixture(scope="session", autouse=True)
def _pass_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every compile in these tests caches pass results in a fresh directory, never in ~."""
    from compiler.passes.cache import CACHE_ENV

    root = tmp_path_factory.mktemp("pass-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root))
        yield root


@pytest.fixture
def no_tool_envs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tool environments (litert-torch, onnx2tf) are looked for in an empty directory: the
    'not set up' path, whatever this machine has."""
    monkeypatch.setenv(TOOLS_ENV, str(tmp_path / "no-tools"))


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> DigitsData:
    from compiler.examples.digits import write_datasets

    calibration, evaluation = write_datasets(tmp_path_factory.mktemp("digits-data"))
    return DigitsData(calibration, evaluation)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    private, public = generate_key_pair(tmp_path_factory.mktemp("compiler-keys"), "compiler")
    return Keys(private, public)


@pytest.fixture(scope="session")
def digits_compiled(
    tmp_path_factory: pytest.TempPathFactory, digits_data: DigitsData, keys: Keys
) -> Compiled:
    """``edgefleet compile`` of the digits CNN for two int8 profiles, a GPU profile that falls
    back to fp32, and a TFLite profile that is skipped (its tool environment looked for in an
    empty directory).

    ``--no-speed-check``: these tests assert size and agreement, which must not depend on the
    load of the machine running them (int8 is ~0.75x fp32 here, measured and still reported);
    tests/compiler/test_speed.py proves the rule itself."""
    from edgefleet.cli import app

    out = tmp_path_factory.mktemp("digits-bundles")
    profiles = [*INT8_PROFILES, FALLBACK_PROFILE, TFLITE_PROFILE]
    args = ["compile", DIGITS, *(a for tag in profiles for a in ("--profile", tag))]
    args += ["--calibration", str(digits_data.calibration), "--eval", str(digits_data.evaluation)]
    args += ["--out", str(out), "--key", str(keys.private), "--name", "digits"]
    args += ["--version", "1.0.0", "--no-speed-check"]
    with pytest.MonkeyPatch.context() as patch:  # the TFLite skip, whatever this machine has
        patch.setenv(TOOLS_ENV, str(tmp_path_factory.mktemp("no-tools")))
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return Compiled(out=out, stdout=result.stdout, stderr=result.stderr)


@pytest.fixture(scope="session")
def float_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN exported to a plain fp32 ONNX file."""
    from compiler.examples.digits import trained_cnn
    from compiler.passes import Artifact, Format, PassContext
    from compiler.passes.export_onnx import ExportConfig, ExportOnnx
    from compiler.sources import TorchModel

    module, example = trained_cnn()
    path = tmp_path_factory.mktemp("digits-onnx") / "digits.onnx"
    context = PassContext(workdir=path.parent, torch_model=TorchModel(module, example))
    ExportOnnx(ExportConfig()).run(Artifact(Format.TORCH, "digits"), path, context)
    return path


def digits_pass_context(
    tmp_path_factory: pytest.TempPathFactory, digits_data: DigitsData, name: str
) -> tuple[TorchModel, PassContext]:
    """The trained digits CNN and a pass context calibrating on its data, for running passes
    directly (outside ``compile_model``)."""
    from compiler.data import load_dataset
    from compiler.passes.base import PassContext
    from compiler.sources import TorchSource, load_torch, resolve_source

    spec = resolve_source(DIGITS)
    assert isinstance(spec, TorchSource)
    model = load_torch(spec, seed=0)
    context = PassContext(
        workdir=tmp_path_factory.mktemp(name),
        calibration=load_dataset(digits_data.calibration, "calibration"),
        torch_model=model,
    )
    return model, context
