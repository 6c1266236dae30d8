"""The compile says when the host lacks the CPU features of the target it measures for."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

from compiler.host_cpu import host_features, mismatch_note, missing_features
from compiler.passes.base import Format
from compiler.recipes import recipe_for
from hardware_profiles.loader import load_profile
from hardware_profiles.schema import HardwareProfile

X86 = "x86-64/avx512-vnni"


def _here(tag: str, features: tuple[str, ...] | None = None) -> HardwareProfile:
    """A built-in profile as if its target had this host's architecture."""
    profile = load_profile(tag)
    hardware = profile.hardware
    if features is not None:
        hardware = dataclasses.replace(hardware, cpu_features=features)
    return dataclasses.replace(profile, arch=platform.machine(), hardware=hardware)


def test_host_features_are_read_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma\nbugs\t\t: spectre\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd aes crc32\n")
    assert host_features(x86) == {"fpu", "sse4_2", "avx2", "fma"}
    assert host_features(arm) == {"fp", "asimd", "aes", "crc32"}
    assert host_features(tmp_path / "absent") == frozenset()


def test_a_host_without_vnni_is_named_in_the_note() -> None:
    profile = _here(X86)
    avx2 = frozenset({"sse4_2", "avx2", "fma"})
    assert missing_features(profile, avx2) == ["avx512f", "avx512bw", "avx512vl", "avx512_vnni"]
    note = mismatch_note(profile, avx2)
    assert "lacks avx512f, avx512bw, avx512vl, avx512_vnni, which x86-64/avx512-vnni has" in note
    assert "saturate" in note
    assert mismatch_note(profile, avx2 | set(profile.hardware.cpu_features)) == ""
    assert missing_features(profile, frozenset()) == []  # unknown host: no claim


def test_only_cpu_targets_of_the_host_architecture_are_compared() -> None:
    other_arch = dataclasses.replace(load_profile(X86), arch="riscv64")
    assert missing_features(other_arch, frozenset({"avx2"})) == []
    gpu = _here("nvidia/jetson-orin-nano")
    assert missing_features(gpu, frozenset({"avx2"})) == []


def test_the_recipe_of_a_quantized_target_carries_the_note() -> None:
    impossible = _here(X86, features=("avx2", "no_such_feature_anywhere"))
    notes = recipe_for(impossible, source=Format.ONNX).notes
    assert any("lacks no_such_feature_anywhere" in note for note in notes), notes
    fp32_only = dataclasses.replace(
        impossible, precisions=tuple(p for p in impossible.precisions if p.value == "fp32")
    )
    assert not any("lacks" in note for note in recipe_for(fp32_only, source=Format.ONNX).notes)
