"""``edgefleet tools``: the converters' own environments (:mod:`compiler.toolenv`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

tools_app = typer.Typer(
    help="Converter environments: litert-torch (PyTorch -> TFLite), onnx2tf (ONNX -> TFLite).",
    no_args_is_help=True,
)
_out = Console(highlight=False)


@tools_app.command("setup")
def setup_command(
    name: Annotated[str, typer.Argument(help="litert-torch or onnx2tf.", show_default=False)],
    constraint: Annotated[
        list[Path] | None,
        typer.Option(help="pip constraints file (repeatable), e.g. constraints.txt."),
    ] = None,
) -> None:
    """Create or complete a tool environment (torch pinned to the compiler's version)."""
    from compiler.toolenv import setup, tool

    chosen = tool(name)
    _out.print(f"setting up {chosen.name} in {escape(str(chosen.path))} (pip, a few minutes)")
    seconds = setup(chosen, constraints=tuple(constraint or ()))
    _out.print(f"{chosen.name} ready in {seconds:.0f} s")


@tools_app.command("list")
def list_command() -> None:
    """Each tool environment, where it lives and whether it is ready."""
    from compiler.toolenv import TOOLS

    for item in TOOLS.values():
        state = "ready" if item.ready() else "not set up"
        _out.print(f"{item.name:<14} {state:<11} {escape(str(item.path))}")
