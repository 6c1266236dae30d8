"""The profiles a compile targets, as ``--profile`` names them: a known tag
(``raspberry-pi/4b``, built in or from ``EDGEFLEET_PROFILES_PATH``) or the path of a profile
YAML file, so that a one-off variant (a board with less SRAM, a tighter flash budget) can be
compiled for without registering it.

A ``--profile`` value is read as a file when it ends in ``.yaml`` / ``.yml`` or names an
existing file; anything else is a tag. Tags look like ``family/model``, so a slash alone does
not make a path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compiler.errors import CompileError
from hardware_profiles import HardwareProfile, ProfileError, load_profile, load_profile_file

PROFILE_SUFFIXES = (".yaml", ".yml")


def is_profile_file(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.suffix.lower() in PROFILE_SUFFIXES or path.is_file()


def load_target(spec: str) -> HardwareProfile:
    """The profile ``spec`` names; :class:`ProfileError` (one line, naming the file or the
    known tags) when there is none or the file is not a valid profile."""
    if not is_profile_file(spec):
        return load_profile(spec)
    try:
        return load_profile_file(Path(spec).expanduser())
    except ProfileError as exc:
        raise ProfileError(f"--profile {exc}") from None


def load_targets(specs: Sequence[str]) -> list[HardwareProfile]:
    """Each distinct profile once, in order; two files that define one tag are refused (their
    bundles would be named alike)."""
    if not specs:
        raise CompileError("give at least one --profile")
    found: dict[str, tuple[HardwareProfile, str]] = {}
    for spec in dict.fromkeys(specs):
        profile = load_target(spec)
        known = found.get(profile.tag)
        if known is not None and known[0] != profile:
            raise CompileError(
                f"--profile {spec}: profile {profile.tag!r} is also given by --profile "
                f"{known[1]}, differently; give each tag once"
            )
        found.setdefault(profile.tag, (profile, spec))
    return [profile for profile, _ in found.values()]
