"""Parse a long-running command's options with argparse instead of typer.

Why: typer (0.29 here) checks every option value with a pydantic ``TypeAdapter``, so parsing
``edgefleet agent run`` through typer would load pydantic, its compiled core and the adapters
(~8 MiB resident) into the edge agent, the process that must cost almost nothing beside its
runtime (issue 4), and that :mod:`edgefleet.codec` otherwise keeps free of pydantic.

The command's typer signature stays the one definition of its options: :func:`parse` reads
the option names, types, defaults, environment variables and bounds from it. ``--help``
still goes through typer. Supported parameters: ``str``, ``int``, ``float``, ``Path``, each
optionally ``| None``, ``bool`` flags, and repeatable ``list[Path]`` or ``list[str]``
options. Any other kind raises TypeError, so a new option that this module cannot parse
fails its test (``tests/edgefleet/test_cli_lean.py``) instead of being parsed wrongly.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from typer.models import OptionInfo

# (command, sub-command) -> (module, function): parsed here; every other command by typer.
LEAN_COMMANDS: dict[tuple[str, str], tuple[str, str]] = {
    ("agent", "run"): ("edge_agent.cli", "run"),
}

_SCALARS: tuple[type[Any], ...] = (str, int, float, Path)


def lean_command(argv: Sequence[str]) -> Callable[[], None] | None:
    """The call that runs ``argv`` (without the program name) when its command is parsed
    here; None for every other command line, and for ``--help``."""
    if len(argv) < 2 or "--help" in argv:
        return None
    target = LEAN_COMMANDS.get((argv[0], argv[1]))
    if target is None:
        return None
    module, name = target
    function: Callable[..., None] = getattr(importlib.import_module(module), name)
    values = parse(function, argv[2:], prog=f"edgefleet {argv[0]} {argv[1]}")
    return lambda: function(**values)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line naming the problem, exit code 2 (argparse also prints the whole usage)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _option(name: str, hint: Any) -> tuple[Any, OptionInfo]:
    """(the value type, without ``| None``; the typer option) of one parameter."""
    base, *extras = typing.get_args(hint) if typing.get_origin(hint) is typing.Annotated else ()
    info = next((extra for extra in extras if isinstance(extra, OptionInfo)), None)
    if info is None:
        raise TypeError(f"lean CLI: parameter {name!r} is not a typer.Option")
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(base) if arg is not type(None)]
        base = rest[0] if len(rest) == 1 else base
    return base, info


def parse(function: Callable[..., Any], argv: Sequence[str], prog: str) -> dict[str, Any]:
    """The keyword arguments ``function`` (a typer command) gets for ``argv``; a bad command
    line exits 2 with one line naming the problem, as typer would."""
    hints = typing.get_type_hints(function, include_extras=True)
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False)
    bounds: dict[str, tuple[str, float | None, float | None]] = {}
    valued: set[str] = set()
    for name, parameter in inspect.signature(function).parameters.items():
        kind, info = _option(name, hints[name])
        # In ``Annotated[..., typer.Option("--name", "-n")]`` the first name sits in ``default``.
        first = [info.default] if isinstance(info.default, str) else []
        declared = [decl for decl in (*first, *(info.param_decls or ())) if decl.startswith("-")]
        flags = declared or [f"--{name.replace('_', '-')}"]
        required = parameter.default is inspect.Parameter.empty
        default = None if required else parameter.default
        from_env = os.environ.get(info.envvar) if isinstance(info.envvar, str) else None
        if from_env is not None:  # argparse converts a text default with ``type``
            default, required = from_env, False
        if kind is bool:
            action: Any = "store_true" if declared else argparse.BooleanOptionalAction
            parser.add_argument(*flags, dest=name, action=action, default=default)
        elif typing.get_origin(kind) is list and typing.get_args(kind)[0] in (Path, str):
            item = typing.get_args(kind)[0]
            parser.add_argument(*flags, dest=name, type=item, action="append", default=default)
            valued.update(flags)
        elif kind in _SCALARS:
            parser.add_argument(
                *flags, dest=name, type=kind, default=default, required=required, metavar="X"
            )
            valued.update(flags)
            if info.min is not None or info.max is not None:
                bounds[name] = (flags[0], info.min, info.max)
        else:
            raise TypeError(f"lean CLI: option {flags[0]} of type {kind!r} is not supported")
    values = vars(parser.parse_args(_joined(argv, valued)))
    for name, (flag, low, high) in bounds.items():
        value = values[name]
        if value is not None and (
            (low is not None and value < low) or (high is not None and value > high)
        ):
            span = f"{'' if low is None else low}..{'' if high is None else high}"
            parser.error(f"argument {flag}: {value} is not in the range {span}")
    return values


def _joined(argv: Sequence[str], valued: set[str]) -> list[str]:
    """``--option value`` as ``--option=value`` for every option that takes a value: argparse
    reads a value that starts with '-' (a device token such as ``-Xf3...``) as an option and
    refuses the line, where typer takes it as the value."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in valued and index + 1 < len(argv):
            joined.append(f"{arg}={argv[index + 1]}")
            index += 2
        else:
            joined.append(arg)
            index += 1
    return joined
