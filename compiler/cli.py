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
from rich.table import Table

if TYPE_CHECKING:
    from compiler.pipeline import CompileResult

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)


def compile_command(
    model: Annotated[
        str,
        typer.Argument(
            help="An ONNX file, a float .tflite (TFLite profiles only), or a PyTorch factory "
            "'package.module:factory' that returns (torch.nn.Module, example_input).",
            show_default=False,
        ),
    ],
    profile: Annotated[
        list[str],
        typer.Option(
            "--profile",
            "-p",
            help="Hardware profile tag, or the path of a profile YAML file (a variant of a "
            "built-in one, say); repeat for several.",
        ),
    ],
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="Calibration data: .npy (N x input shape) or .npz (one array per model input "
            "name; any single name for a one-input model)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory for the bundles and their .tar files.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="ed25519 private key that signs the bundles.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name, e.g. digits.")] = None,
    version: Annotated[str | None, typer.Option(help="Semantic version, e.g. 1.0.0.")] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="Evaluation data .npz: 'x' samples, optional 'y' integer labels. "
            "Defaults to the calibration data.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for torch and calibration sampling.")] = 0,
    explain: Annotated[
        bool, typer.Option("--explain", help="Print each profile's plan and exit; runs nothing.")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(help="Write a report of every candidate tried: .md (markdown) or .html."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="accuracy, top1_agreement, cosine (mean over samples), min_cosine (the worst "
            "sample), max_abs_error, or 'module:function' "
            "(reference, outputs, labels) -> float, higher is better. Default: accuracy with "
            "labels, top1_agreement for a classifier, cosine otherwise."
        ),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            help="Allowed drop of the metric below the float model (for max_abs_error: the "
            "largest allowed error). Default 0.01."
        ),
    ] = None,
    min_metric: Annotated[
        float | None,
        typer.Option(help="Absolute floor of the metric (a ceiling for max_abs_error)."),
    ] = None,
    output_name: Annotated[
        str | None,
        typer.Option(
            help="Models with several outputs: the output the metric reads. Default: every "
            "output, the worst score counts."
        ),
    ] = None,
    quantization: Annotated[
        str,
        typer.Option(help="auto, static, dynamic or none (no int8 candidates)."),
    ] = "auto",
    calibrate_method: Annotated[
        str, typer.Option(help="Static QDQ calibration: minmax, entropy or percentile.")
    ] = "minmax",
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Pass result cache (default $EDGEFLEET_CACHE_DIR or ~/.cache/edgefleet/compiler)."
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not use the pass cache.")
    ] = False,
    speed_check: Annotated[
        bool,
        typer.Option(
            "--speed-check/--no-speed-check",
            help="CPU profiles: reject a quantized candidate not shown faster than fp32 on "
            "this host (interleaved runs, sign test). Off: still measured and reported.",
        ),
    ] = True,
    prune: Annotated[
        float | None,
        typer.Option(
            help="PyTorch models: remove this share of channels (0.5 = half) with "
            "torch-pruning, then fine-tune with --train-step.",
        ),
    ] = None,
    train_step: Annotated[
        str | None,
        typer.Option(
            help="Your training hook 'package.module:function', called as train(model, epochs): "
            "fine-tunes after --prune, trains the tickets of --lottery-sparsity."
        ),
    ] = None,
    fine_tune_epochs: Annotated[
        int, typer.Option(help="Epochs per --train-step call (fine-tuning, lottery rounds).")
    ] = 2,
    lottery_sparsity: Annotated[
        float | None,
        typer.Option(
            help="Iterative magnitude pruning with weight rewinding (lottery ticket) to this "
            "share of zero weights; needs --train-step."
        ),
    ] = None,
    distill_student: Annotated[
        str | None,
        typer.Option(
            help="Distil MODEL (the teacher) into this student 'package.module:factory' "
            "(returns an nn.Module) on --train-data, and compile the student."
        ),
    ] = None,
    train_data: Annotated[
        Path | None,
        typer.Option(help="Training data .npz for distillation: 'x', optional labels 'y'."),
    ] = None,
    distill_temperature: Annotated[
        float, typer.Option(help="Distillation softmax temperature.")
    ] = 4.0,
    distill_alpha: Annotated[
        float, typer.Option(help="Weight of the teacher term (1 - alpha: the labels).")
    ] = 0.7,
    distill_epochs: Annotated[int, typer.Option(help="Distillation epochs.")] = 12,
) -> None:
    """Compile a model into signed per-profile bundles, with evidence and golden samples."""
    from compiler.errors import CompileError
    from compiler.pipeline import CompileRequest, compile_model

    if quantization not in ("auto", "static", "dynamic", "none"):
        raise CompileError(f"--quantization {quantization!r}: use auto, static, dynamic or none")
    if calibrate_method not in ("minmax", "entropy", "percentile"):
        raise CompileError(
            f"--calibrate-method {calibrate_method!r}: use minmax, entropy or percentile"
        )
    request = CompileRequest(
        model=model,
        profiles=tuple(profile),
        calibration=calibration or Path(),
        out=out or Path(),
        key=key or Path(),
        name=name or "",
        version=version or "",
        eval_data=eval_data,
        seed=seed,
        metric=metric,
        max_drop=max_drop,
        min_metric=min_metric,
        quantization=quantization,  # type: ignore[arg-type]
        calibrate_method=calibrate_method,  # type: ignore[arg-type]
        cache_dir=cache_dir,
        use_cache=not no_cache,
        speed_check=speed_check,
        prune=prune,
        train_step=train_step,
        fine_tune_epochs=fine_tune_epochs,
        lottery_sparsity=lottery_sparsity,
        distill_student=distill_student,
        train_data=train_data,
        distill_temperature=distill_temperature,
        distill_alpha=distill_alpha,
        distill_epochs=distill_epochs,
        output=output_name,
    )
    if explain:
        from compiler.explain import explain as explain_plan

        _plain().print(escape(explain_plan(request)), soft_wrap=True)
        return
    missing = [
        flag
        for flag, value in (
            ("--calibration", calibration),
            ("--out", out),
            ("--key", key),
            ("--name", name),
            ("--version", version),
        )
        if value is None
    ]
    if missing:
        raise CompileError(f"missing {', '.join(missing)} (needed unless --explain)")
    from compiler.progress import ProgressBars

    with ProgressBars(_err) as bars:
        result = compile_model(request, bars)
    _summary(result)
    if report is not None:
        from compiler.report import write_report

        _plain().print(f"report: {escape(str(write_report(result, report)))}")


def _plain() -> Console:
    # Not a terminal (a log, a pipe): don't wrap at 80 columns unless COLUMNS says so.
    width = None if "COLUMNS" in os.environ else 200
    return _out if _out.is_terminal else Console(highlight=False, width=width)


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
    out = _plain()
    out.print(table)
    accuracy = "" if result.float_accuracy is None else f", accuracy {result.float_accuracy:.2%}"
    out.print(
        f"fp32 reference: {_size(result.float_size_bytes)}, "
        f"{result.float_latency_ms:.3f} ms batch 1 on host ({result.float_runtime}){accuracy}"
    )
    for built in result.bundles:
        for note in built.notes:
            out.print(f"{built.profile}: {escape(note)}")
        evidence = built.bundle.manifest.evidence
        if evidence.excluded_nodes:
            out.print(
                f"{built.profile}: kept in float: {escape(', '.join(evidence.excluded_nodes))}"
            )
        if evidence.fallback_ops:
            falling = escape(", ".join(evidence.fallback_ops))
            out.print(f"{built.profile}: ops falling back to the CPU: {falling}")


def _size(value: int) -> str:
    return f"{value / 1024:.1f} KiB" if value < 1 << 20 else f"{value / (1 << 20):.2f} MiB"


def _number(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)
