"""``--report report.md`` (or ``.html``): one table per profile with every candidate tried,
its size, host latency and metric, and which one won and why."""

from __future__ import annotations

import html
from pathlib import Path

from compiler.pipeline import CompileResult


def render_markdown(result: CompileResult) -> str:
    lines = ["# edgefleet compile report", ""]
    float_kib = result.float_size_bytes / 1024
    metric = (
        f", {result.metric} {result.float_metric:.4g}" if result.float_metric is not None else ""
    )
    lines.append(
        f"fp32 reference: {float_kib:.1f} KiB, {result.float_latency_ms:.3f} ms batch 1 on the host"
        f" ({result.float_runtime}){metric}. Pass cache: {result.cache_hits} hits, "
        f"{result.cache_misses} runs."
    )
    for built in result.bundles:
        evidence = built.bundle.manifest.evidence
        lines += ["", f"## {built.profile}: {built.precision}", ""]
        lines.append(
            "| candidate | precision | size | vs fp32 | host latency (b=1) | metric "
            "| kept in float | result |"
        )
        lines.append("|---|---|---:|---:|---:|---:|---|---|")
        for c in evidence.candidates:
            ratio = f"{c.size_bytes / result.float_size_bytes:.2f}x" if c.size_bytes else ""
            latency = f"{c.host_latency_ms:.3f} ms" if c.host_latency_ms is not None else ""
            value = f"{c.metric} {c.metric_value:.4g}" if c.metric_value is not None else c.metric
            kept = ", ".join(c.excluded_nodes)
            verdict = ("**chosen**: " if c.accepted else "rejected: ") + c.reason
            lines.append(
                f"| {c.name} | {c.precision} | {c.size_bytes / 1024:.1f} KiB | {ratio} | {latency} "
                f"| {value} | {kept} | {_cell(verdict)} |"
            )
        lines.append("")
        if built.batch_ms is not None and built.float_batch_ms:
            n = built.speed_batch
            lines.append(
                f"Throughput at batch {n} on the host: {1000 * n / built.batch_ms:.0f} samples/s "
                f"(fp32: {1000 * n / built.float_batch_ms:.0f} samples/s)."
            )
        if evidence.excluded_nodes:
            lines.append(f"Nodes kept in float: {', '.join(evidence.excluded_nodes)}.")
        if evidence.fallback_ops:
            lines.append(f"Ops that fall back to the CPU: {', '.join(evidence.fallback_ops)}.")
        lines.append(f"Selection: {evidence.selection}")
        lines.append(f"Bundle: `{built.bundle.tar}`")
    for skipped in result.skipped:
        lines += ["", f"## {skipped.tag}: skipped", "", skipped.reason]
    return "\n".join(lines) + "\n"


def render_html(result: CompileResult) -> str:
    body = html.escape(render_markdown(result))
    return (
        f"<!doctype html><meta charset='utf-8'><title>edgefleet compile</title><pre>{body}</pre>\n"
    )


def write_report(result: CompileResult, path: Path) -> Path:
    text = (
        render_html(result) if path.suffix.lower() in (".html", ".htm") else render_markdown(result)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
