"""``edgefleet profiles``: list, show and validate hardware profiles.

Errors are :class:`~hardware_profiles.ProfileError`; the CLI root prints them as one line and
exits 1. ``--json`` output goes to stdout unformatted so scripts can parse it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from edgefleet.codec import to_json
from hardware_profiles.loader import (
    PROFILE_SUFFIXES,
    ProfileError,
    all_profiles,
    dump_profile,
    load_profile,
    load_profile_file,
    profile_source,
)
from hardware_profiles.schema import HardwareProfile

app = typer.Typer(help="List and inspect hardware profiles.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _summary(profile: HardwareProfile) -> dict[str, Any]:
    return {
        "tag": profile.tag,
        "name": profile.name,
        "arch": profile.arch,
        "accelerator": profile.accelerator.value,
        "runtime": profile.runtime.value,
        "format": profile.format.value,
        "precisions": [p.value for p in profile.precisions],
    }


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List every known profile (built-in and from EDGEFLEET_PROFILES_PATH)."""
    profiles = all_profiles()
    if as_json:
        typer.echo(json.dumps([_summary(p) for p in profiles], indent=2))
        return
    table = Table(
        title="Hardware profiles",
        box=None,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        header_style="bold",
    )
    console = Console()
    columns = ["tag", "arch", "accelerator", "runtime", "format", "precisions"]
    if console.width >= 110:  # the name only where it fits: the facts never wrap
        columns.append("name")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for profile in profiles:
        row = _summary(profile)
        row["precisions"] = ",".join(row["precisions"])
        table.add_row(*(str(row[column]) for column in columns))
    console.print(table)


@app.command("show")
def show_command(
    tag: Annotated[str, typer.Argument(help="Profile tag, e.g. raspberry-pi/4b.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
) -> None:
    """Show one profile in full, with the features derived from it."""
    profile = load_profile(tag)
    if as_json:
        typer.echo(to_json(profile, indent=2))
        return
    console = Console()
    source = escape(profile_source(tag))
    console.print(f"[bold]{escape(profile.name)}[/] ({profile.tag})  from {source}")
    console.print(Syntax(dump_profile(profile), "yaml", word_wrap=True))
    console.print(f"[bold]preferred precision:[/] {profile.preferred_precision.value}")
    console.print(f"[bold]features:[/] {', '.join(sorted(profile.features))}", highlight=False)


def _files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in PROFILE_SUFFIXES)
        else:
            files.append(path)
    return files


def _check(path: Path) -> HardwareProfile:
    profile = load_profile_file(path)
    try:
        known = profile_source(profile.tag)
    except ProfileError:
        return profile
    if Path(known).resolve() != path.resolve():
        raise ProfileError(
            f"{path}: field tag: profile {profile.tag!r} is already defined in {known}; "
            "choose another tag"
        )
    return profile


@app.command("validate")
def validate_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Profile files, or directories of *.yaml files.")
    ],
) -> None:
    """Check profile files you wrote: schema, field types, and that the tag is new."""
    console = Console(highlight=False)
    failed = 0
    files = _files(paths)
    if not files:
        raise ProfileError(f"{', '.join(map(str, paths))}: no profile files (*.yaml) found")
    for path in files:
        try:
            profile = _check(path)
        except ProfileError as exc:
            failed += 1
            console.print(f"[red]error[/] {escape(str(exc))}", soft_wrap=True)
        else:
            console.print(f"[green]ok[/]    {escape(str(path))} ({profile.tag})", soft_wrap=True)
    if failed:
        raise ProfileError(f"{failed} of {len(files)} profile files are invalid")
