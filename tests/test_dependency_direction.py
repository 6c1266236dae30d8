"""The dependency rules of docs/architecture.md, enforced.

- ``edge_agent`` never imports ``compiler`` or ``fleet_server``, nor any server or compiler
  dependency (a device installs ``edgefleet[agent]`` only);
- ``fleet_server`` never imports ``compiler``;
- ``hardware_profiles`` imports only the core's errors;
- the core ``edgefleet`` imports the parts only in its CLI composition root, and only their
  ``cli`` modules, which themselves import nothing heavy at module level.

Checked twice: statically over every import statement (including those inside functions),
and dynamically in a fresh interpreter that imports the agent and the whole CLI.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER_AND_COMPILER_DEPS = {
    "torch",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "amqtt",
    "onnx",
    "onnxscript",
    "sklearn",
    "alembic",
}
FORBIDDEN: dict[str, set[str]] = {
    "edge_agent": {"compiler", "fleet_server", *SERVER_AND_COMPILER_DEPS},
    "fleet_server": {"compiler", "edge_agent", "torch", "onnxscript", "sklearn"},
    "hardware_profiles": {"compiler", "edge_agent", "fleet_server", "edgefleet.cli"},
    "compiler": {"edge_agent", "fleet_server"},
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in forbidden)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_follow_the_rules(package: str) -> None:
    offences = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in sorted(imported_modules(path))
        if violates(module, FORBIDDEN[package])
    ]
    assert offences == []


def test_core_imports_parts_only_in_the_cli_root() -> None:
    parts = {"compiler", "edge_agent", "fleet_server", "hardware_profiles"}
    offences = []
    for path in sorted((ROOT / "edgefleet").rglob("*.py")):
        in_cli = path.relative_to(ROOT).parts[:2] == ("edgefleet", "cli")
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top not in parts or top == "hardware_profiles":
                continue
            if not in_cli or not module.endswith(".cli"):
                offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offences == []


def test_the_cli_root_registers_only_the_parts_cli_modules() -> None:
    from edgefleet.cli import COMMANDS

    modules = {module for module, _ in COMMANDS.values()}
    offences = [
        module
        for module in modules
        if not module.startswith("edgefleet.cli") and not module.split(".")[-1].endswith("cli")
    ]
    assert offences == []


def test_agent_and_cli_import_no_server_or_compiler_dependency() -> None:
    probe = """
import importlib, json, pkgutil, sys
import edge_agent, edgefleet.cli
edgefleet.cli.build_app()
for info in pkgutil.walk_packages(edge_agent.__path__, "edge_agent."):
    importlib.import_module(info.name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = set(json.loads(result.stdout))
    assert loaded & SERVER_AND_COMPILER_DEPS == set()
    assert "edge_agent" in loaded
