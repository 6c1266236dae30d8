"""Does the host's CPU have the instructions the target's CPU has?

The compiler measures every candidate's accuracy and speed on the host, in the target's
runtime. For a CPU target that is only faithful when the host's CPU has the target's
features: int8 on an x86 host without VNNI runs onnxruntime's AVX2 u8s8 kernels, whose
16-bit intermediate sums can saturate where the target's VNNI instructions do not, so int8
measured there can look worse (and slower) than it is on the target. The compile says so
(:func:`mismatch_note`) instead of leaving the user to wonder why int8 lost.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

from hardware_profiles.schema import Accelerator, HardwareProfile

CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def host_features(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The host CPU's feature flags (x86 ``flags``, Arm ``Features``); empty where unknown."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def saturating_int8() -> bool:
    """Whether onnxruntime's default int8 kernels on this host sum in 16 bits and can
    saturate: x86 without VNNI (AVX2 and AVX-512 ``vpmaddubsw``)."""
    flags = host_features()
    x86 = platform.machine() in ("x86_64", "AMD64")
    return x86 and bool(flags) and not {"avx512_vnni", "avx_vnni"} & flags


def missing_features(profile: HardwareProfile, flags: frozenset[str] | None = None) -> list[str]:
    """The profile's CPU features this host lacks: only for a CPU target of the host's own
    architecture whose features the host reports (anything else is not measured as the
    target anyway, and says so elsewhere)."""
    if profile.accelerator is not Accelerator.CPU or profile.arch != platform.machine():
        return []
    have = host_features() if flags is None else flags
    if not have:
        return []
    return [flag for flag in profile.hardware.cpu_features if flag not in have]


def mismatch_note(profile: HardwareProfile, flags: frozenset[str] | None = None) -> str:
    """One line for the compile's notes, empty when the host has every feature."""
    missing = missing_features(profile, flags)
    if not missing:
        return ""
    return (
        f"this host lacks {', '.join(missing)}, which {profile.tag} has: quantized candidates "
        "are measured with this host's kernels (on x86 without VNNI, int8 sums can saturate), "
        "so their accuracy and speed here can be worse than on the target; compile on a host "
        "with these features for evidence that holds on the target"
    )
