"""CLI sub-app (stub)."""

from __future__ import annotations

import typer

app = typer.Typer(help="List and inspect hardware profiles.", no_args_is_help=True)
