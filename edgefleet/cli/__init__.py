"""The ``edgefleet`` command: one typer app with a sub-app per part.

Each sub-command lives in its part's own ``cli`` module, imported only when that command runs:
``edgefleet agent run`` on a device loads the agent's CLI and nothing else (no torch, FastAPI,
SQLAlchemy, nor the other parts' option parsing), and parses its options without typer, whose
checks load pydantic (:mod:`edgefleet.cli.lean`). ``edgefleet --help`` loads every part to list
them.
:func:`main` is the one boundary where a domain error becomes a clean message and exit code 1.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from edgefleet.cli.lean import lean_command
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


def _say(text: str) -> None:
    """One line on stderr; rich is imported here, not by ``edgefleet agent run`` at start."""
    from rich.console import Console

    Console(stderr=True).print(text, highlight=False, soft_wrap=True)


def main() -> None:
    named = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
    try:
        # `agent run` is parsed without typer, which would load pydantic (edgefleet/cli/lean.py)
        lean = lean_command(sys.argv[1:])
        if lean is not None:
            lean()
        else:
            build_app(named)()
    except EdgefleetError as exc:
        from rich.markup import escape

        _say(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(1)
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(130)
