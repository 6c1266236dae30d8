"""``edgefleet compile``: a model in, one signed bundle per hardware profile out.

Imports nothing heavy: torch, onnx and onnxruntime load inside the pipeline when it runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from compiler.pipeline import CompileResult

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)


class _RichReporter:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task("starting", total=None)

    def step(self, message: str) -> None:
        self._progress.update(self._task, description=message)
        self._progress.console.print(
            f"[dim]•[/] {escape(message)}", highlight=False, soft_wrap=True
        )

    def note(self, message: str) -> None:
        self._progress.console.print(
            f"[yellow]![/] {escape(message)}", highlight=False, soft_wrap=True
        )


def compile_command(
    model: Annotated[
        str,
        typer.Argument(
            help="An ONNX file, or a PyTorch factory 'package.module:factory' that returns "
            "(torch.nn.Module, example_input).",
            show_default=False,
        ),
    ],
    profile: Annotated[
        list[str],
        typer.Option("--profile", "-p", help="Hardware profile tag; repeat for several."),
    ],
    calibration: Annotated[
        Path,
        typer.Option(help="Calibration data: .npy (N x input shape) or .npz (key 'x')."),
    ],
    out: Annotated[Path, typer.Option(help="Directory for the bundles and their .tar files.")],
    key: Annotated[Path, typer.Option(help="ed25519 private key that signs the bundles.")],
    name: Annotated[str, typer.Option(help="Model name, e.g. digits.")],
    version: Annotated[str, typer.Option(help="Semantic version, e.g. 1.0.0.")],
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="Evaluation data .npz: 'x' samples, optional 'y' integer labels. "
            "Defaults to the calibration data.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for torch and calibration sampling.")] = 0,
) -> None:
    """Compile a model into signed per-profile bundles, with evidence and golden samples."""
    from compiler.pipeline import CompileRequest, compile_model

    request = CompileRequest(
        model=model,
        profiles=tuple(profile),
        calibration=calibration,
        out=out,
        key=key,
        name=name,
        version=version,
        eval_data=eval_data,
        seed=seed,
    )
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=_err, transient=True, disable=not _err.is_terminal) as progress:
        result = compile_model(request, _RichReporter(progress))
    _summary(result)


def _summary(result: CompileResult) -> None:
    table = Table(title="edgefleet compile", title_justify="left")
    for column, justify in (
        ("profile", "left"),
        ("precision", "left"),
        ("size", "right"),
        ("vs fp32", "right"),
        ("max abs error", "right"),
        ("top-1 agree", "right"),
        ("host latency", "right"),
        ("bundle", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for built in result.bundles:
        evidence = built.bundle.manifest.evidence
        ratio = evidence.size_bytes / result.float_size_bytes
        table.add_row(
            built.profile,
            built.precision,
            _size(evidence.size_bytes),
            f"{ratio:.2f}x",
            _number(evidence.max_abs_error, "{:.3g}"),
            _number(evidence.top1_agreement, "{:.2%}"),
            _number(evidence.host_latency_ms, "{:.3f} ms"),
            escape(str(built.bundle.tar)),
        )
    for skipped in result.skipped:
        table.add_row(skipped.tag, "[yellow]skipped[/]", "", "", "", "", "", escape(skipped.reason))
    # Not a terminal (a log, a pipe): don't wrap the table at 80 columns unless COLUMNS says so.
    width = None if "COLUMNS" in os.environ else 200
    out = _out if _out.is_terminal else Console(highlight=False, width=width)
    out.print(table)
    accuracy = "" if result.float_accuracy is None else f", accuracy {result.float_accuracy:.2%}"
    out.print(
        f"fp32 reference: {_size(result.float_size_bytes)}, "
        f"{result.float_latency_ms:.3f} ms batch 1 on host (onnxruntime CPU, 1 thread){accuracy}"
    )
    for built in result.bundles:
        for note in built.notes:
            out.print(f"{built.profile}: {escape(note)}")


def _size(value: int) -> str:
    return f"{value / 1024:.1f} KiB" if value < 1 << 20 else f"{value / (1 << 20):.2f} MiB"


def _number(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)
