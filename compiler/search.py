"""The accuracy-guarded search: try a profile's candidates cheapest first, keep sensitive
nodes in float until the bound holds, reject quantized models that are not faster than fp32
on the host (CPU targets), and keep the first candidate that passes: the smallest and fastest
the recipe can offer within the bound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from compiler.data import IntArray, Samples
from compiler.errors import CompileError
from compiler.metrics import Bound, Metric, score
from compiler.passes.base import Artifact, Format, PassContext
from compiler.passes.cache import PassCache
from compiler.passes.quantize_dynamic import QuantizeDynamic
from compiler.passes.quantize_static import QuantizationError
from compiler.recipes import CandidatePlan, Recipe
from compiler.runner import HostModel, Outputs, Runner, host_for, paired_latency
from compiler.sensitivity import keep_in_float, rank_nodes
from compiler.speed import SpeedPolicy, compare_speed
from edgefleet.bundle import Candidate
from hardware_profiles.schema import Precision

log = logging.getLogger(__name__)


class Notify(Protocol):
    def __call__(self, message: str) -> None: ...


@dataclass(frozen=True)
class SearchSettings:
    metric: Metric
    bound: Bound = field(default_factory=Bound)
    max_exclusions: int = 8
    speed_batch: int = 32
    latency_runs: int = 40
    speed_check: bool = True  # reject quantized candidates not shown faster than fp32 (CPU)
    speed_policy: SpeedPolicy = field(default_factory=SpeedPolicy)
    output: str | None = None  # the output the metric reads; None: every output, the worst


@dataclass(frozen=True)
class FloatReference:
    """The float model and what it scores; every candidate is measured against it."""

    artifact: Artifact
    host: HostModel
    x: Samples
    y: IntArray | None
    outputs: Outputs

    def size(self) -> int:
        return self.artifact.file.stat().st_size


@dataclass
class Measured:
    plan: CandidatePlan
    artifact: Artifact
    host: Runner | None
    outputs: Outputs | None
    metric_value: float | None
    latency_ms: float | None = None  # batch 1, median, paired with fp32
    float_latency_ms: float | None = None
    batch_ms: float | None = None  # batch N, median, paired with fp32
    float_batch_ms: float | None = None
    excluded: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.artifact.file.stat().st_size


@dataclass
class SearchOutcome:
    winner: Measured | None
    candidates: list[Candidate] = field(default_factory=list)
    excluded_nodes: tuple[str, ...] = ()
    exclusion_reasons: tuple[str, ...] = ()
    selection: str = ""
    float_metric: float | None = None


def search(
    recipe: Recipe,
    sources: dict[Format, Artifact],
    reference: FloatReference,
    settings: SearchSettings,
    context: PassContext,
    cache: PassCache,
    notify: Notify,
) -> SearchOutcome:
    metric, bound = settings.metric, settings.bound
    float_value = score(metric, reference.outputs, reference.outputs, reference.y, settings.output)
    limit = bound.describe(metric, float_value)
    outcome = SearchOutcome(winner=None, float_metric=float_value)
    tag = recipe.profile.tag
    for plan in recipe.candidates:
        notify(f"{tag}: trying {plan.name}")
        try:
            measured = _build(plan, sources, reference, settings, context, cache)
        except QuantizationError as exc:
            outcome.candidates.append(_rejected(plan, metric, f"{exc}"))
            continue
        ok = _holds(measured, metric, bound, float_value)
        reasons: list[str] = []
        while not ok and plan.searchable and len(measured.excluded) < settings.max_exclusions:
            pick = _most_sensitive(reference, measured)
            if pick is None:
                break
            node, why = pick
            outcome.candidates.append(
                _record(
                    measured,
                    metric,
                    False,
                    f"{_value(measured, metric)} breaks the bound "
                    f"{limit}; next: keep {node} in float ({why})",
                )
            )
            reasons.append(f"{node}: {why}")
            notify(f"{tag}: {plan.name}: keeping {node} in float ({why})")
            excluded = keep_in_float(reference.artifact.file, (*measured.excluded, node))
            try:
                measured = _build(
                    plan.with_excluded(excluded),
                    sources,
                    reference,
                    settings,
                    context,
                    cache,
                    excluded,
                )
            except QuantizationError as exc:
                outcome.candidates.append(_rejected(plan, metric, f"{exc}"))
                break
            ok = _holds(measured, metric, bound, float_value)
        if not ok:
            why = f"{_value(measured, metric)} breaks the bound {limit}"
            if measured.excluded:
                why += f" even with {len(measured.excluded)} node(s) kept in float"
            outcome.candidates.append(_record(measured, metric, False, why))
            continue
        problem = _speed_or_budget(recipe, measured, reference, settings)
        if problem:
            outcome.candidates.append(_record(measured, metric, False, problem))
            notify(f"{tag}: {measured.plan.name} rejected: {problem}")
            continue
        outcome.winner = measured
        outcome.excluded_nodes = measured.excluded
        outcome.exclusion_reasons = tuple(reasons)
        outcome.selection = _selection(measured, reference, metric, limit, reasons)
        outcome.candidates.append(_record(measured, metric, True, outcome.selection))
        return outcome
    return outcome


def _build(
    plan: CandidatePlan,
    sources: dict[Format, Artifact],
    reference: FloatReference,
    settings: SearchSettings,
    context: PassContext,
    cache: PassCache,
    excluded: tuple[str, ...] = (),
) -> Measured:
    source = sources.get(plan.pipeline.source)
    if source is None:
        raise CompileError(f"{plan.name}: no {plan.pipeline.source.value} model to start from")
    artifact = plan.pipeline.run(source, context, cache)
    host = (
        reference.host
        if artifact.digest == reference.artifact.digest
        else host_for(artifact.file, like=reference.host)
    )
    outputs = host.run_all(reference.x)
    value = score(settings.metric, reference.outputs, outputs, reference.y, settings.output)
    float_ms, ms = paired_latency(reference.host, host, reference.x, runs=settings.latency_runs)
    return Measured(plan, artifact, host, outputs, value, ms, float_ms, excluded=excluded)


def _holds(measured: Measured, metric: Metric, bound: Bound, float_value: float) -> bool:
    if measured.metric_value is None:
        return True  # not measurable on the host: the device's golden check decides
    return bound.holds(metric, measured.metric_value, float_value)


def _most_sensitive(reference: FloatReference, measured: Measured) -> tuple[str, str] | None:
    dynamic = [p for p in measured.plan.pipeline.passes if isinstance(p, QuantizeDynamic)]
    op_types = frozenset(dynamic[0].config.op_types) if dynamic else None
    ranked = rank_nodes(reference.artifact.file, measured.artifact.file, reference.x, op_types)
    for item in ranked:
        if item.node not in measured.excluded and item.score > 0:
            return item.node, f"{item.op_type}, relative error grows by {item.score:.3g} across it"
    return None


def _speed_or_budget(
    recipe: Recipe, measured: Measured, reference: FloatReference, settings: SearchSettings
) -> str:
    budget = recipe.profile.budgets.max_model_bytes
    if budget is not None and measured.size > budget:
        return f"{measured.size} bytes, over the profile's budget of {budget}"
    if measured.host is None:
        return ""
    batch = settings.speed_batch
    rule = recipe.speed_rule and measured.plan.precision is not Precision.FP32
    policy = settings.speed_policy
    if not (rule and settings.speed_check):  # measured for the report only: one round
        policy = SpeedPolicy(round_pairs=policy.round_pairs, max_pairs=policy.round_pairs)
    verdict = compare_speed(reference.host, measured.host, reference.x, batch=batch, policy=policy)
    measured.float_batch_ms, measured.batch_ms = verdict.float_ms, verdict.candidate_ms
    if rule and settings.speed_check and not verdict.faster:
        return f"not faster than fp32 on the host: {verdict.describe(batch)}"
    return ""


def _selection(
    measured: Measured, reference: FloatReference, metric: Metric, limit: str, reasons: list[str]
) -> str:
    parts = [f"{measured.plan.name} won: the first candidate (cheapest first) within {limit}"]
    if measured.metric_value is not None:
        parts[0] += f" ({metric.name} {measured.metric_value:.4g})"
    parts.append(f"{measured.size / reference.size():.2f}x the fp32 size")
    if measured.batch_ms is not None and measured.float_batch_ms:
        parts.append(
            f"{measured.batch_ms / measured.float_batch_ms:.2f}x fp32 host time at batch N"
        )
    if reasons:
        parts.append("kept in float: " + "; ".join(reasons))
    return "; ".join(parts)


def _value(measured: Measured, metric: Metric) -> str:
    return "n/a" if measured.metric_value is None else f"{metric.name} {measured.metric_value:.4g}"


def _record(measured: Measured, metric: Metric, accepted: bool, reason: str) -> Candidate:
    return Candidate(
        name=measured.plan.name,
        precision=measured.plan.precision.value,
        size_bytes=measured.size,
        host_latency_ms=measured.latency_ms,
        metric=metric.name,
        metric_value=measured.metric_value,
        excluded_nodes=measured.excluded,
        accepted=accepted,
        reason=reason,
    )


def _rejected(plan: CandidatePlan, metric: Metric, reason: str) -> Candidate:
    return Candidate(
        name=plan.name,
        precision=plan.precision.value,
        size_bytes=0,
        metric=metric.name,
        accepted=False,
        reason=reason,
    )
