"""Helpers for profile tests: a valid profile as data, and a place for extra profiles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hardware_profiles import PROFILES_PATH_ENV
from hardware_profiles.loader import dump_profile, load_profile

ProfileWriter = Callable[[str, dict[str, Any]], Path]


@pytest.fixture(autouse=True)
def _no_extra_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from the built-in profiles only, whatever the caller's environment says."""
    monkeypatch.delenv(PROFILES_PATH_ENV, raising=False)


@pytest.fixture
def valid_data() -> dict[str, Any]:
    """A valid profile (the Raspberry Pi one under a new tag), as plain YAML data."""
    data: dict[str, Any] = yaml.safe_load(dump_profile(load_profile("raspberry-pi/4b")))
    data["tag"] = "acme/board-1"
    data["name"] = "Acme Board 1"
    return data


@pytest.fixture
def write_profile(tmp_path: Path) -> ProfileWriter:
    """Write ``data`` as YAML to ``tmp_path/<name>`` and return the path."""

    def write(name: str, data: dict[str, Any]) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return write
