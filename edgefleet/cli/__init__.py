"""The ``edgefleet`` command: one typer app with a sub-app per part.

Sub-app modules import nothing heavy at module level, so ``edgefleet agent run`` on a device
never loads torch, FastAPI or SQLAlchemy. :func:`main` is the one boundary where a domain
error becomes a clean message and exit code 1.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from compiler.cli import compile_command
from edge_agent.cli import app as agent_app
from edgefleet.cli.artifacts import bundle_app, keys_app
from edgefleet.cli.demo import demo_command
from edgefleet.errors import EdgefleetError
from fleet_server.cli import app as fleet_app
from fleet_server.cli import cohort_app, device_app, model_app, rollout_app
from hardware_profiles.cli import app as profiles_app

app = typer.Typer(
    name="edgefleet",
    help="Compile models per hardware target, run them on devices, roll them out safely.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(profiles_app, name="profiles")
app.add_typer(keys_app, name="keys")
app.add_typer(bundle_app, name="bundle")
app.command("compile")(compile_command)
app.add_typer(agent_app, name="agent")
app.add_typer(fleet_app, name="fleet")
app.add_typer(model_app, name="model")
app.add_typer(device_app, name="device")
app.add_typer(cohort_app, name="cohort")
app.add_typer(rollout_app, name="rollout")
app.command("demo")(demo_command)

_stderr = Console(stderr=True)


def main() -> None:
    try:
        app()
    except EdgefleetError as exc:
        _stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        _stderr.print("interrupted")
        sys.exit(130)
