"""A model with two inputs and two outputs, compiled by the real compiler, installed through
the agent's update path: its golden samples (``inputs/<name>``, ``outputs/<name>``) are run
input by input and checked output by output on the device."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from compiler.pipeline import CompileRequest, compile_model
from edge_agent.errors import InputError
from edgefleet.bundle import (
    GOLDEN_INPUTS,
    GOLDEN_OUTPUTS,
    SigningKey,
    golden_key,
    pack_bundle,
    seal_bundle,
    verify_bundle,
)
from edgefleet.protocol.messages import DeploymentPhase as Phase
from tests.compiler.test_multi_io import _two_in_two_out
from tests.edge_agent.conftest import Rig
from tests.edge_agent.helpers import PROFILE, BuiltBundle, desired_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory, key_dir: Path) -> Path:
    """The bundle directory of the two-input, two-output model compiled for this profile."""
    work = tmp_path_factory.mktemp("two-io")
    rng = np.random.default_rng(1)
    data = work / "d.npz"
    np.savez(
        data,
        a=rng.standard_normal((16, 4)).astype(np.float32),
        b=rng.standard_normal((16, 4)).astype(np.float32),
    )
    request = CompileRequest(
        model=str(_two_in_two_out(work / "m.onnx")),
        profiles=[PROFILE],
        calibration=data,
        out=work / "out",
        key=key_dir / "trusted.key",
        name="two",
        version="1.0.0",
        metric="max_abs_error",
        max_drop=0.1,
        speed_check=False,
        speed_batch=4,
        use_cache=False,  # never the user's cache directory
    )
    (built,) = compile_model(request).bundles
    return built.bundle.directory


def _bundle(rig: Rig, directory: Path, tag: str) -> BuiltBundle:
    tar = pack_bundle(directory, rig.workdir / f"{tag}.tar")
    data = tar.read_bytes()
    manifest = verify_bundle(directory, [rig.key.public]).manifest
    return BuiltBundle(tar, hashlib.sha256(data).hexdigest(), len(data), manifest)


def _copy(compiled: Path, rig: Rig) -> Path:
    rig.workdir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(compiled, rig.workdir / "bundle"))


def _edit_golden(directory: Path, key: SigningKey, **changes: np.ndarray | None) -> None:
    """Rewrite golden.npz (``None`` drops an array) and sign the bundle again."""
    path = directory / "golden.npz"
    with np.load(path) as golden:
        arrays = {name: golden[name] for name in golden.files}
    for name, array in changes.items():
        name = name.replace("__", "/")
        if array is None:
            del arrays[name]
        else:
            arrays[name] = array
    manifest = verify_bundle(directory, [key.public]).manifest
    np.savez(path, **arrays)
    seal_bundle(directory, manifest, key)


def test_a_two_input_two_output_bundle_installs_with_every_output_checked(
    rig: Rig, compiled: Path
) -> None:
    bundle = _bundle(rig, _copy(compiled, rig), "good")
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.COMMITTED, rig.reports
    model = rig.slot.current()
    assert model is not None and model.version == "1.0.0"
    with np.load(compiled / "golden.npz") as golden:
        a, b = golden[golden_key(GOLDEN_INPUTS, "a")], golden[golden_key(GOLDEN_INPUTS, "b")]
        want = golden[golden_key(GOLDEN_OUTPUTS, "scaled")]
    total, scaled = model.prepared.run({"a": a[:3], "b": b[:3]})
    np.testing.assert_allclose(scaled, want[:3], atol=model.manifest.golden.atol)
    assert total.shape == (3, 4)
    # The local API feeds it by name; a bare list is refused naming both inputs.
    (answer,) = model.run_examples([model.coerce({"a": a[0].tolist(), "b": b[0].tolist()})])
    np.testing.assert_allclose(answer[1], want[0], atol=model.manifest.golden.atol)
    with pytest.raises(InputError, match=r"one entry per model input \('a', 'b'\)"):
        model.coerce([0.0] * 4)


def test_a_wrong_second_output_fails_the_golden_check_naming_it(rig: Rig, compiled: Path) -> None:
    directory = _copy(compiled, rig)
    with np.load(directory / "golden.npz") as golden:
        scaled = golden[golden_key(GOLDEN_OUTPUTS, "scaled")]
    _edit_golden(directory, rig.key, outputs__scaled=scaled + np.float32(0.5))
    bundle = _bundle(rig, directory, "bad-output")
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.FAILED
    assert rig.phases()[-2:] == [Phase.STAGING, Phase.FAILED]
    detail = rig.reports[-1].detail
    assert detail.startswith("golden.npz: sample 0 differs from the expected output 'scaled'")
    assert rig.slot.current() is None


def test_a_missing_named_input_fails_the_golden_check_naming_it(rig: Rig, compiled: Path) -> None:
    directory = _copy(compiled, rig)
    _edit_golden(directory, rig.key, inputs__b=None)
    bundle = _bundle(rig, directory, "no-b")
    rig.publish(1, bundle)
    assert rig.updater.apply(desired_for(bundle, 1, "dep-1")) is Phase.FAILED
    assert rig.reports[-1].detail.startswith("golden.npz: missing array 'inputs/b' (has: [")
