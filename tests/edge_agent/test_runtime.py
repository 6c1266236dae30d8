from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import AgentError, RuntimeBackendError
from edge_agent.runtime import backend_for
from edge_agent.runtime.ort import OnnxRuntimeBackend
from hardware_profiles import Execution, HardwareProfile, load_profile
from tests.edge_agent.helpers import expected, manifest_for, write_tiny_onnx

pytestmark = pytest.mark.integration


def test_prepare_once_run_many_matches_numpy(tmp_path: Path, profile: HardwareProfile) -> None:
    backend = backend_for(profile)
    assert backend.name == "onnxruntime"
    assert backend.supports(manifest_for())
    model = backend.prepare(write_tiny_onnx(tmp_path / "m.onnx", 3), manifest_for())
    assert model.provider == "CPUExecutionProvider"
    for rows in (1, 5):
        x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
        (y,) = model.run({"x": x})
        np.testing.assert_allclose(y, expected(x, 3), rtol=1e-5, atol=1e-5)


def test_threads_come_from_the_profile_capped_at_the_cpus(
    tmp_path: Path, profile: HardwareProfile
) -> None:
    backend = OnnxRuntimeBackend(profile)
    model = backend.prepare(write_tiny_onnx(tmp_path / "m.onnx"), manifest_for())
    assert model.threads == min(profile.defaults.threads, os.cpu_count() or 1)


def test_missing_gpu_providers_fall_back_to_cpu_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jetson = load_profile("nvidia/jetson-orin-nano")
    backend = OnnxRuntimeBackend(jetson)
    with caplog.at_level(logging.WARNING):
        model = backend.prepare(write_tiny_onnx(tmp_path / "m.onnx"), manifest_for())
    assert model.provider == "CPUExecutionProvider"
    assert "TensorrtExecutionProvider" in caplog.text
    assert "runs on CPUExecutionProvider" in caplog.text


def test_no_provider_and_no_cpu_fallback_is_an_error(profile: HardwareProfile) -> None:
    strict = replace(
        profile, execution=Execution(providers=("CUDAExecutionProvider",), allow_cpu_fallback=False)
    )
    with pytest.raises(RuntimeBackendError, match="CUDAExecutionProvider"):
        OnnxRuntimeBackend(strict).providers()


def test_unloadable_model_names_the_file(tmp_path: Path, profile: HardwareProfile) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(RuntimeBackendError, match=r"^model\.onnx: onnxruntime cannot load"):
        OnnxRuntimeBackend(profile).prepare(broken, manifest_for())


def test_manifest_names_must_match_the_model(tmp_path: Path, profile: HardwareProfile) -> None:
    manifest = manifest_for()
    spec = replace(manifest.interface.inputs[0], name="pixels")
    renamed = replace(manifest, interface=replace(manifest.interface, inputs=(spec,)))
    with pytest.raises(RuntimeBackendError, match="pixels"):
        OnnxRuntimeBackend(profile).prepare(write_tiny_onnx(tmp_path / "m.onnx"), renamed)


def test_a_runtime_without_backend_is_refused_by_name() -> None:
    with pytest.raises(AgentError, match=r"'tflite-micro' is not supported.*litert, onnxruntime"):
        backend_for(load_profile("arm/cortex-m7"))
