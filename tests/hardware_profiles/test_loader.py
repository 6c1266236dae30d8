from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hardware_profiles import (
    PROFILES_PATH_ENV,
    Accelerator,
    ArtifactFormat,
    Precision,
    ProfileError,
    QuantScheme,
    Runtime,
    all_profiles,
    load_profile,
    load_profile_file,
    profile_source,
)
from hardware_profiles.loader import clear_cache
from tests.hardware_profiles.conftest import ProfileWriter

BUILTIN_TAGS = {
    "x86-64/avx512-vnni",
    "raspberry-pi/4b",
    "raspberry-pi/4b-litert",
    "nvidia/jetson-orin-nano",
    "qualcomm/hexagon-npu",
    "google/coral-edgetpu",
    "arm/cortex-m7",
}
PROFILES_DIR = Path(__file__).parents[2] / "hardware_profiles" / "profiles"


def test_all_builtin_profiles_load_with_unique_tags() -> None:
    profiles = all_profiles()
    tags = [p.tag for p in profiles]
    assert set(tags) == BUILTIN_TAGS
    assert len(tags) == len(set(tags))
    assert tags == sorted(tags)


def test_accelerators_span_every_kind() -> None:
    assert {p.accelerator for p in all_profiles()} == set(Accelerator)


@pytest.mark.parametrize("tag", sorted(BUILTIN_TAGS))
def test_file_name_follows_tag_and_points_editors_at_the_schema(tag: str) -> None:
    source = Path(profile_source(tag))
    assert source.name == tag.replace("/", "-") + ".yaml"
    first_line = source.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schema.json"
    assert (source.parent / "../schema.json").resolve().is_file()
    assert load_profile_file(source) == load_profile(tag)


@pytest.mark.parametrize("tag", sorted(BUILTIN_TAGS))
def test_each_profile_states_runtime_backends_precisions_budgets_threads(tag: str) -> None:
    profile = load_profile(tag)
    backends = profile.execution.providers or profile.execution.delegates
    if profile.runtime is Runtime.ONNXRUNTIME:
        assert profile.format is ArtifactFormat.ONNX
        assert profile.execution.providers[-1] == "CPUExecutionProvider"
    elif profile.runtime is Runtime.LITERT and profile.accelerator is not Accelerator.CPU:
        assert backends, "a LiteRT accelerator profile names its delegates"
    assert profile.precisions
    assert profile.budgets.max_model_bytes is not None
    assert profile.defaults.threads <= profile.hardware.cores


def test_profile_facts_match_the_targets() -> None:
    vnni = load_profile("x86-64/avx512-vnni")
    assert vnni.arch == "x86_64"
    assert "avx512_vnni" in vnni.hardware.cpu_features
    assert vnni.precisions == (Precision.INT8, Precision.FP32)
    assert vnni.quantization.scheme is QuantScheme.STATIC_QDQ
    assert vnni.quantization.per_channel

    pi = load_profile("raspberry-pi/4b")
    assert (pi.arch, pi.hardware.cpu, pi.hardware.cores) == ("aarch64", "Cortex-A72", 4)
    assert "neon" in pi.hardware.cpu_features
    assert pi.quantization.scheme is QuantScheme.STATIC_QDQ

    jetson = load_profile("nvidia/jetson-orin-nano")
    assert jetson.accelerator is Accelerator.GPU
    assert jetson.precisions == (Precision.FP16, Precision.FP32, Precision.INT8)
    assert jetson.preferred_precision is Precision.FP16
    assert jetson.execution.providers == (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )

    hexagon = load_profile("qualcomm/hexagon-npu")
    assert hexagon.execution.providers == ("QNNExecutionProvider", "CPUExecutionProvider")
    assert hexagon.execution.allow_cpu_fallback is False
    assert hexagon.quantization.scheme is QuantScheme.STATIC_QDQ
    assert hexagon.quantization.activations == "uint8"

    coral = load_profile("google/coral-edgetpu")
    assert (coral.runtime, coral.format) == (Runtime.LITERT, ArtifactFormat.TFLITE)
    assert coral.execution.delegates == ("edgetpu",)
    assert coral.quantization.scheme is QuantScheme.FULL_INT8
    assert coral.quantization.int8_io

    mcu = load_profile("arm/cortex-m7")
    assert (mcu.arch, mcu.runtime) == ("armv7e-m", Runtime.TFLITE_MICRO)
    assert (mcu.hardware.ram_kb, mcu.hardware.flash_kb) == (512, 2048)
    assert mcu.quantization.int8_io
    arena, model = mcu.budgets.max_arena_bytes, mcu.budgets.max_model_bytes
    assert arena is not None and arena < 512 * 1024
    assert model is not None and model < 2048 * 1024


def test_derived_features_are_computed_from_declared_facts() -> None:
    vnni = load_profile("x86-64/avx512-vnni")
    assert {"precision:int8", "runtime:onnxruntime", "cpu:avx512_vnni"} <= vnni.features
    assert "precision:fp16" not in vnni.features
    assert "accelerator:mcu" in load_profile("arm/cortex-m7").features


def test_unknown_tag_names_it_and_lists_known_ones() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile("acme/nothing")
    message = str(caught.value)
    assert "'acme/nothing'" in message
    assert all(tag in message for tag in BUILTIN_TAGS)


def test_extra_directory_adds_profiles(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    write_profile: ProfileWriter,
    valid_data: dict[str, Any],
) -> None:
    write_profile("extra/acme-board-1.yaml", valid_data)
    single = write_profile("single.yaml", {**valid_data, "tag": "acme/board-2"})
    monkeypatch.setenv(PROFILES_PATH_ENV, os.pathsep.join([str(tmp_path / "extra"), str(single)]))
    tags = {p.tag for p in all_profiles()}
    assert tags == BUILTIN_TAGS | {"acme/board-1", "acme/board-2"}
    assert load_profile("acme/board-1").name == "Acme Board 1"
    assert profile_source("acme/board-2") == str(single)
    monkeypatch.delenv(PROFILES_PATH_ENV)
    with pytest.raises(ProfileError, match="acme/board-1"):
        load_profile("acme/board-1")


def test_missing_extra_directory_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(PROFILES_PATH_ENV, str(missing))
    with pytest.raises(ProfileError, match=f"{PROFILES_PATH_ENV}: {missing}: no such"):
        all_profiles()


def test_builtins_are_cached_until_cleared() -> None:
    first = load_profile("raspberry-pi/4b")
    assert load_profile("raspberry-pi/4b") is first
    clear_cache()
    again = load_profile("raspberry-pi/4b")
    assert again is not first
    assert again == first


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"nope\.yaml: no such profile file"):
        load_profile_file(tmp_path / "nope.yaml")
