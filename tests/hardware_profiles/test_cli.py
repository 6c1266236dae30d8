"""``edgefleet profiles``: through the real root app, as a user runs it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app, main
from edgefleet.codec import from_json
from hardware_profiles import (
    PROFILES_PATH_ENV,
    HardwareProfile,
    ProfileError,
    load_profile,
    profile_source,
)
from tests.hardware_profiles.conftest import ProfileWriter
from tests.hardware_profiles.test_loader import BUILTIN_TAGS

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_list_json_has_every_profile_with_its_keys() -> None:
    result = runner.invoke(app, ["profiles", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {row["tag"] for row in rows} == BUILTIN_TAGS
    for row in rows:
        profile = load_profile(row["tag"])
        assert row["arch"] == profile.arch
        assert row["accelerator"] == profile.accelerator.value
        assert row["runtime"] == profile.runtime.value
        assert row["format"] == profile.format.value
        assert row["name"] == profile.name
        assert row["precisions"] == [p.value for p in profile.precisions]


def test_list_table_shows_every_tag() -> None:
    result = runner.invoke(app, ["profiles", "list"], env=WIDE)
    assert result.exit_code == 0, result.output
    for tag in BUILTIN_TAGS:
        assert tag in result.stdout
    assert "tflite-micro" in result.stdout
    assert "fp16,fp32,int8" in result.stdout


def test_list_includes_profiles_from_the_search_path(
    monkeypatch: pytest.MonkeyPatch, write_profile: ProfileWriter, valid_data: dict[str, Any]
) -> None:
    path = write_profile("extra/acme-board-1.yaml", valid_data)
    monkeypatch.setenv(PROFILES_PATH_ENV, str(path.parent))
    result = runner.invoke(app, ["profiles", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert "acme/board-1" in {row["tag"] for row in json.loads(result.stdout)}


def test_show_json_is_the_profile() -> None:
    result = runner.invoke(app, ["profiles", "show", "qualcomm/hexagon-npu", "--json"])
    assert result.exit_code == 0, result.output
    shown = from_json(HardwareProfile, result.stdout)
    assert shown == load_profile("qualcomm/hexagon-npu")


def test_show_readable_has_facts_and_derived_features() -> None:
    result = runner.invoke(app, ["profiles", "show", "nvidia/jetson-orin-nano"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "TensorrtExecutionProvider" in result.stdout
    assert "preferred precision: fp16" in result.stdout
    assert "accelerator:gpu" in result.stdout
    assert profile_source("nvidia/jetson-orin-nano") in result.stdout


def test_show_unknown_tag_fails_with_profile_error() -> None:
    result = runner.invoke(app, ["profiles", "show", "acme/nothing"])
    assert result.exit_code == 1
    assert isinstance(result.exception, ProfileError)
    assert "unknown hardware profile 'acme/nothing'" in str(result.exception)


def test_show_unknown_tag_is_one_clean_line_from_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["edgefleet", "profiles", "show", "acme/nothing"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: unknown hardware profile 'acme/nothing'")
    assert "Traceback" not in captured.err
    assert "raspberry-pi/4b" in captured.err


def test_validate_accepts_a_good_file_and_directory(
    write_profile: ProfileWriter, valid_data: dict[str, Any]
) -> None:
    path = write_profile("mine/acme-board-1.yaml", valid_data)
    result = runner.invoke(app, ["profiles", "validate", str(path), str(path.parent)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok") == 2
    assert "(acme/board-1)" in result.stdout


def test_validate_reports_each_bad_file(
    tmp_path: Path, write_profile: ProfileWriter, valid_data: dict[str, Any]
) -> None:
    good = write_profile("good.yaml", valid_data)
    bad = write_profile("bad.yaml", {**valid_data, "tag": "acme/board-2", "cores": 4})
    copied = tmp_path / "my-pi.yaml"
    shutil.copy(profile_source("raspberry-pi/4b"), copied)
    result = runner.invoke(
        app, ["profiles", "validate", str(good), str(bad), str(copied)], env=WIDE
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, ProfileError)
    assert "2 of 3 profile files are invalid" in str(result.exception)
    assert f"ok    {good}" in result.stdout
    assert f"error {bad}: field cores: unknown field" in result.stdout
    assert f"error {copied}: field tag: profile 'raspberry-pi/4b' is already defined" in (
        result.stdout
    )


def test_validate_accepts_the_shipped_profiles() -> None:
    folder = str(Path(profile_source("arm/cortex-m7")).parent)
    result = runner.invoke(app, ["profiles", "validate", folder], env=WIDE)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok ") == len(BUILTIN_TAGS)
