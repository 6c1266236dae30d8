"""The ``edgefleet`` command: one typer app with a sub-app per part.

Each sub-command lives in its part's own ``cli`` module, imported only when that command runs:
``edgefleet agent run`` on a device loads the agent's CLI and nothing else (no torch, FastAPI,
SQLAlchemy, nor the other parts' option parsing). ``edgefleet --help`` loads them all to list them.
:func:`main` is the one boundary where a domain error becomes a clean message and exit code 1.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from edgefleet.errors import EdgefleetError

# command name -> (module, attribute): a typer sub-app, or a function for a single command.
COMMANDS: dict[str, tuple[str, str]] = {
    "profiles": ("hardware_profiles.cli", "app"),
    "keys": ("edgefleet.cli.artifacts", "keys_app"),
    "bundle": ("edgefleet.cli.artifacts", "bundle_app"),
    "compile": ("compiler.cli", "compile_command"),
    "tools": ("compiler.tools_cli", "tools_app"),
    "agent": ("edge_agent.cli", "app"),
    "fleet": ("fleet_server.cli", "app"),
    "model": ("fleet_server.cli", "model_app"),
    "device": ("fleet_server.cli", "device_app"),
    "cohort": ("fleet_server.cli", "cohort_app"),
    "rollout": ("fleet_server.cli", "rollout_app"),
    "demo": ("edgefleet.cli.demo", "demo_command"),
}

_stderr = Console(stderr=True)


def build_app(only: str | None = None) -> typer.Typer:
    """The root app with every command, or with just ``only`` when the command line names it."""
    root = typer.Typer(
        name="edgefleet",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )

    @root.callback()
    def _root() -> None:
        """Compile models per hardware target, run them on devices, roll them out safely."""

    for name, (module, attribute) in COMMANDS.items():
        if only is not None and name != only:
            continue
        target = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            root.add_typer(target, name=name)
        else:
            root.command(name)(target)
    return root


def __getattr__(name: str) -> Any:
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    named = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
    try:
        build_app(named)()
    except EdgefleetError as exc:
        _stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        _stderr.print("interrupted")
        sys.exit(130)
