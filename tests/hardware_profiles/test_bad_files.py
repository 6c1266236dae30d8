"""A bad profile file is refused with a message that names the file, the field and the reason."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hardware_profiles import PROFILES_PATH_ENV, ProfileError, load_profile, load_profile_file
from hardware_profiles.loader import profile_source
from tests.hardware_profiles.conftest import ProfileWriter

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value

    return mutate


def _drop(key: str) -> Mutation:
    return lambda data: data.pop(key) and None


CASES: dict[str, tuple[Mutation, str, str]] = {
    # name: (mutation, field named, reason)
    "unknown top-level field": (
        _set("colour", "red"),
        "colour",
        "unknown field, extra fields not permitted (allowed: tag, name,",
    ),
    "unknown nested field": (
        _set("hardware.gpu_cores", 128),
        "hardware.gpu_cores",
        "unknown field, extra fields not permitted (allowed: cores, memory_mb, cpu,",
    ),
    "providers not a list": (
        _set("execution.providers", "CPUExecutionProvider"),
        "execution.providers",
        "Input should be a valid tuple",
    ),
    "bad tag": (_set("tag", "Acme Board"), "tag", "must look like 'family/model'"),
    "unknown accelerator": (
        _set("accelerator", "fpga"),
        "accelerator",
        "Input should be 'cpu', 'gpu', 'npu', 'tpu' or 'mcu'",
    ),
    "missing runtime": (_drop("runtime"), "runtime", "Field required"),
    "zero cores": (
        _set("hardware.cores", 0),
        "hardware.cores",
        "Input should be greater than or equal to 1",
    ),
    "cores not a number": (
        _set("hardware.cores", "four"),
        "hardware.cores",
        "Input should be a valid integer",
    ),
    "unknown precision in list": (
        _set("precisions", ["int8", "int4"]),
        "precisions[1]",
        "Input should be 'fp32', 'fp16' or 'int8'",
    ),
    "no precisions": (_set("precisions", []), "precisions", "Tuple should have at least 1 item"),
    "bad activation type": (
        _set("quantization.activations", "int4"),
        "quantization.activations",
        "Input should be 'int8' or 'uint8'",
    ),
    "derived feature written in YAML": (
        _set("features", ["precision:int8"]),
        "features",
        "unknown field, extra fields not permitted",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_field_names_file_field_and_reason(
    case: str, write_profile: ProfileWriter, valid_data: dict[str, Any]
) -> None:
    mutate, field, reason = CASES[case]
    data = copy.deepcopy(valid_data)
    mutate(data)
    path = write_profile("acme-board-1.yaml", data)
    with pytest.raises(ProfileError) as caught:
        load_profile_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert f"field {field}: {reason}" in message
    assert "\n" not in message


def test_every_problem_is_listed(write_profile: ProfileWriter, valid_data: dict[str, Any]) -> None:
    data = copy.deepcopy(valid_data)
    data["colour"] = "red"
    data["hardware"]["cores"] = -1
    path = write_profile("two.yaml", data)
    with pytest.raises(ProfileError) as caught:
        load_profile_file(path)
    message = str(caught.value)
    assert "field colour: unknown field" in message
    assert "field hardware.cores: Input should be greater than or equal to 1" in message


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("tag: acme/board-1\nname: Acme\nhardware: {cores: 4\narch: x\n")
    with pytest.raises(ProfileError) as caught:
        load_profile_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line 4, column ")
    assert "invalid YAML" in message


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "the file is empty"), ("- tag: acme/x\n", "expected a mapping of profile fields")],
)
def test_not_a_mapping(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=f"^{path}: {reason}"):
        load_profile_file(path)


def test_redefining_a_builtin_tag_names_both_files(
    monkeypatch: pytest.MonkeyPatch, write_profile: ProfileWriter, valid_data: dict[str, Any]
) -> None:
    builtin = profile_source("raspberry-pi/4b")
    path = write_profile("extra/my-pi.yaml", {**valid_data, "tag": "raspberry-pi/4b"})
    monkeypatch.setenv(PROFILES_PATH_ENV, str(path.parent))
    with pytest.raises(ProfileError) as caught:
        load_profile("x86-64/avx512-vnni")
    message = str(caught.value)
    assert message.startswith(f"{path}: field tag: ")
    assert "'raspberry-pi/4b' is already defined in" in message
    assert builtin in message


def test_redefining_a_tag_between_extra_files_names_both(
    monkeypatch: pytest.MonkeyPatch, write_profile: ProfileWriter, valid_data: dict[str, Any]
) -> None:
    first = write_profile("a/board.yaml", valid_data)
    second = write_profile("b/board.yaml", valid_data)
    monkeypatch.setenv(PROFILES_PATH_ENV, os.pathsep.join([str(first.parent), str(second)]))
    with pytest.raises(ProfileError) as caught:
        load_profile("acme/board-1")
    message = str(caught.value)
    assert message.startswith(f"{second}: field tag: ")
    assert f"already defined in {first}" in message


def test_bad_file_on_the_search_path_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, write_profile: ProfileWriter, valid_data: dict[str, Any]
) -> None:
    path = write_profile("extra/bad.yaml", {**valid_data, "threads": 4})
    monkeypatch.setenv(PROFILES_PATH_ENV, str(path.parent))
    with pytest.raises(ProfileError, match=f"^{path}: field threads: unknown field"):
        load_profile("raspberry-pi/4b")
