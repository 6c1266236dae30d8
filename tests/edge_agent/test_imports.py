"""A device installs only edgefleet[agent]: the agent must not import anything heavier.

Nor pydantic: the agent's messages, manifest, profile and state file are dataclasses read by
edgefleet.codec, and `agent run` options are parsed without typer (edgefleet/cli/lean.py),
which keeps pydantic and its compiled validators (~12 MiB resident) out of the agent.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edge_agent

ALLOWED = {"numpy", "onnxruntime", "paho", "psutil", "typer", "rich", "edgefleet",
           "hardware_profiles", "edge_agent"}  # fmt: skip
FORBIDDEN = ("torch", "fastapi", "sqlalchemy", "compiler", "fleet_server", "onnx", "uvicorn",
             "pydantic", "pydantic_core")  # fmt: skip
# What `edgefleet agent run` loads: the root CLI with only the agent's sub-app, the agent, both
# runtimes' modules, the updater, bundles and profiles. (Its options are parsed without typer,
# whose checks would load pydantic: tests/edgefleet/test_cli_lean.py.)
AGENT_RUN_PATH = (
    "from edgefleet.cli import build_app; build_app('agent')\n"
    "import edge_agent.agent, edge_agent.cli, edge_agent.runtime.ort, edge_agent.runtime.litert\n"
    "import edge_agent.update.machine, edgefleet.bundle, hardware_profiles\n"
)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_edge_agent_imports_only_what_a_device_has() -> None:
    root = Path(edge_agent.__file__).parent
    offenders = {
        str(path.relative_to(root)): sorted(mods - ALLOWED - set(sys.stdlib_module_names))
        for path in root.rglob("*.py")
        if (mods := _imports(path)) - ALLOWED - set(sys.stdlib_module_names)
    }
    assert offenders == {}


def test_loading_the_agent_pulls_in_nothing_heavy() -> None:
    code = (
        f"import sys\n{AGENT_RUN_PATH}"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_the_running_agent_keeps_cryptography_out_of_its_memory(tmp_path: Path) -> None:
    """Trusted keys load without it and signature checks run in a child process, so the
    library and its OpenSSL (~10 MiB resident) never enter the long-running agent."""
    from edgefleet.bundle import generate_key_pair

    _, public = generate_key_pair(tmp_path, "fleet")
    code = (
        "import sys\nfrom pathlib import Path\n"
        "import edge_agent.agent, edge_agent.cli, edge_agent.runtime.ort\n"
        "from edgefleet.bundle import load_verify_key\n"
        f"key = load_verify_key(Path({str(public)!r}), isolated=True)\n"
        "print(key.isolated, sorted(m for m in sys.modules if m.startswith('cryptography')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "True []"
