"""Semantic versions (``MAJOR.MINOR.PATCH[-pre][+build]``): parse and order them."""

from __future__ import annotations

import re

from fleet_server.errors import InvalidBundleError

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


def check_semver(version: str, *, where: str) -> str:
    if not _SEMVER.match(version):
        raise InvalidBundleError(
            f"{where}: version {version!r} is not a semantic version MAJOR.MINOR.PATCH"
        )
    return version


def sort_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Orders as semver: a pre-release sorts before its release; unparsable versions first."""
    match = _SEMVER.match(version)
    if match is None:
        return (-1, -1, -1, -1, ())
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), 0, parts)
