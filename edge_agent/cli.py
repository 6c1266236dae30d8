"""CLI sub-app (stub)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run the on-device agent.", no_args_is_help=True)
