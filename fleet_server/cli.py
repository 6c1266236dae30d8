"""CLI sub-app (stub)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run and operate the fleet server.", no_args_is_help=True)
