"""Semantic-version order, for the anti-downgrade check (pre-releases sort before releases)."""

from __future__ import annotations

from edgefleet.bundle.manifest import SEMVER_PATTERN

_Key = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def version_key(version: str) -> _Key:
    match = SEMVER_PATTERN.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semantic version such as 1.2.0")
    major, minor, patch = (int(part) for part in match.groups()[:3])
    _, _, pre = version.partition("-")
    if not pre:
        return (major, minor, patch, 1, ())
    ids = tuple((0, int(i)) if i.isdigit() else (1, i) for i in pre.split("."))
    return (major, minor, patch, 0, ids)


def is_downgrade(current: str, desired: str) -> bool:
    """True when ``desired`` is strictly older than ``current``."""
    return version_key(desired) < version_key(current)
