"""The committed JSON Schema matches the model, and the shipped profiles satisfy it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hardware_profiles import profile_source
from hardware_profiles.schema_export import SCHEMA_PATH, is_stale, main, schema_text
from tests.hardware_profiles.test_loader import BUILTIN_TAGS


def test_committed_schema_is_fresh() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "hardware_profiles/schema.json is stale: run python -m hardware_profiles.schema_export"
    )


def test_export_check_reports_stale_and_rewrites(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    target.write_text("{}\n")
    assert is_stale(target)
    assert main(["--check", "--output", str(target)]) == 1
    assert main(["--output", str(target)]) == 0
    assert main(["--check", "--output", str(target)]) == 0
    assert json.loads(target.read_text())["title"] == "HardwareProfile"


def _problems(value: Any, schema: dict[str, Any], defs: dict[str, Any], at: str) -> list[str]:
    """A small JSON Schema checker for the keywords pydantic emits for this model."""
    if "$ref" in schema:
        return _problems(value, defs[schema["$ref"].rsplit("/", 1)[-1]], defs, at)
    if "anyOf" in schema:
        options = [_problems(value, option, defs, at) for option in schema["anyOf"]]
        return [] if any(not found for found in options) else [f"{at}: no anyOf matches"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} not in {schema['enum']}"]
    kind = schema.get("type")
    checks = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "boolean": bool,
        "null": type(None),
    }
    if kind is not None and not isinstance(value, checks[kind]):
        return [f"{at}: expected {kind}"]
    if kind == "integer" and (isinstance(value, bool) or value < schema.get("minimum", value)):
        return [f"{at}: below minimum or not an integer"]
    if kind == "string" and "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{at}: does not match {schema['pattern']}"]
    found: list[str] = []
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            found.append(f"{at}: too few items")
        for index, item in enumerate(value):
            found += _problems(item, schema.get("items", {}), defs, f"{at}[{index}]")
    if kind == "object":
        properties = schema.get("properties", {})
        found += [f"{at}.{key}: required" for key in schema.get("required", []) if key not in value]
        for key, item in value.items():
            if key in properties:
                found += _problems(item, properties[key], defs, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{at}.{key}: not allowed")
    return found


@pytest.mark.parametrize("tag", sorted(BUILTIN_TAGS))
def test_shipped_profiles_satisfy_the_schema(tag: str) -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    data = yaml.safe_load(Path(profile_source(tag)).read_text(encoding="utf-8"))
    assert _problems(data, schema, schema["$defs"], "profile") == []


def test_schema_checker_catches_what_the_model_refuses() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    data = yaml.safe_load(Path(profile_source("raspberry-pi/4b")).read_text(encoding="utf-8"))
    data["tag"] = "Not A Tag"
    data["hardware"]["gpu"] = True
    data["precisions"] = ["int4"]
    del data["runtime"]
    problems = _problems(data, schema, schema["$defs"], "profile")
    assert sorted(p.split(":")[0] for p in problems) == [
        "profile.hardware.gpu",
        "profile.precisions[0]",
        "profile.runtime",
        "profile.tag",
    ]
