"""The accuracy-guarded search: try a profile's candidates cheapest first, keep sensitive
nodes in float until the bound holds, reject quantized models that are not faster than fp32
on the host (CPU targets), and keep the first candidate that passes: the smallest and fastest
the recipe can offer within the bound.

Host time is measured only where it decides or proves something: the speed rule's interleaved
comparison at batch N for a candidate already within the bound (CPU profiles, speed check on),
and the winner's batch-1 latency and batch-N time, once, for the bundle's evidence. A candidate
rejected for accuracy is never timed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from compiler import budget
from compiler.data import IntArray, Samples
from compiler.errors import CompileError
from compiler.metrics import Bound, Metric, score
from compiler.passes.base import Artifact, Format, PassContext
from compiler.passes.cache import PassCache
from compiler.passes.quantize_dynamic import QuantizeDynamic
from compiler.passes.quantize_static import QuantizationError
from compiler.recipes import CandidatePlan, Recipe
from compiler.runner import Outputs, Runner, host_for, paired_latency
from compiler.sensitivity import keep_in_float, rank_nodes
from compiler.speed import SpeedPolicy, SpeedVerdict, compare_speed
from edgefleet.bundle import Candidate
from hardware_profiles.schema import Precision

log = logging.getLogger(__name__)


class Notify(Protocol):
    def __call__(self, message: str) -> None: ...


@dataclass(frozen=True)
class SearchSettings:
    metric: Metric
    bound: Bound = field(default_factory=Bound)
    max_exclusions: int = 8  # nodes the search may pick to keep in float, per candidate
    reach_window: int = 3  # give up when the last this many picks gain too little to reach
    speed_batch: int = 32
    latency_runs: int = 40
    speed_check: bool = True  # reject quantized candidates not shown faster than fp32 (CPU)
    speed_policy: SpeedPolicy = field(default_factory=SpeedPolicy)
    output: str | None = None  # the output the metric reads; None: every output, the worst


@dataclass
class HostMemo:
    """What the host measured against one reference, by artifact digest: an artifact that
    several profiles build alike (the same int8 model for two CPU profiles) is run and timed
    once per compile. Outputs and times are kept, not sessions, so memory stays small."""

    outputs: dict[str, Outputs] = field(default_factory=dict)
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)
    speed: dict[tuple[str, int], tuple[SpeedVerdict, bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class FloatReference:
    """The float model and what it scores; every candidate is measured against it."""

    artifact: Artifact
    host: Runner  # onnxruntime for the float ONNX model; LiteRT for a TFLite profile's baseline
    x: Samples
    y: IntArray | None
    outputs: Outputs
    seen: HostMemo = field(default_factory=HostMemo)

    def size(self) -> int:
        return self.artifact.file.stat().st_size


@dataclass
class Measured:
    plan: CandidatePlan
    artifact: Artifact
    host: Runner | None
    outputs: Outputs | None
    metric_value: float | None
    latency_ms: float | None = None  # batch 1, median, paired with fp32 (the winner only)
    float_latency_ms: float | None = None
    batch_ms: float | None = None  # batch N, median, paired with fp32 (speed rule, winner)
    float_batch_ms: float | None = None
    batch_size: int | None = None  # samples per batch-N run (1 for a static-batch model)
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
        history = [measured.metric_value]
        stopped = ""
        while not ok and plan.searchable and len(reasons) < settings.max_exclusions:
            stopped = _out_of_reach(history, metric, bound.limit(metric, float_value), settings)
            pick = None if stopped else _most_sensitive(reference, measured)
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
            excluded = (*measured.excluded, node)
            if _dynamic_ops(measured.plan) is None:  # static QDQ: and what only feeds it
                excluded = keep_in_float(reference.artifact.file, excluded)
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
            history.append(measured.metric_value)
        if not ok:
            why = f"{_value(measured, metric)} breaks the bound {limit}"
            if measured.excluded:
                why += f" even with {len(measured.excluded)} node(s) kept in float"
            if stopped:
                why += f"; stopped keeping nodes in float: {stopped}"
            outcome.candidates.append(_record(measured, metric, False, why))
            continue
        problem = _over_budget(recipe, measured) or _not_faster(
            recipe, measured, reference, settings
        )
        if problem:
            outcome.candidates.append(_record(measured, metric, False, problem))
            notify(f"{tag}: {measured.plan.name} rejected: {problem}")
            continue
        _time_winner(measured, reference, settings)
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
    if artifact.digest == reference.artifact.digest:
        host, outputs = reference.host, reference.outputs
    else:
        host = host_for(artifact.file, like=reference.host)
        seen = reference.seen.outputs
        if artifact.digest not in seen:
            seen[artifact.digest] = host.run_all(reference.x)
        outputs = seen[artifact.digest]
    value = score(settings.metric, reference.outputs, outputs, reference.y, settings.output)
    return Measured(plan, artifact, host, outputs, value, excluded=excluded)


def _holds(measured: Measured, metric: Metric, bound: Bound, float_value: float) -> bool:
    if measured.metric_value is None:
        return True  # not measurable on the host: the device's golden check decides
    return bound.holds(metric, measured.metric_value, float_value)


def _dynamic_ops(plan: CandidatePlan) -> frozenset[str] | None:
    """The op types a dynamic quantizer of ``plan`` quantizes; ``None`` for static QDQ."""
    dynamic = [p for p in plan.pipeline.passes if isinstance(p, QuantizeDynamic)]
    return frozenset(dynamic[0].config.op_types) if dynamic else None


def _out_of_reach(
    history: list[float | None], metric: Metric, limit: float, settings: SearchSettings
) -> str:
    """Empty while keeping more nodes in float may still reach ``limit``; else why not: the
    metric's gain per node over the last ``reach_window`` exclusions, carried over the
    exclusions the search has left, falls short. (A model int8 breaks everywhere, such as an
    NPU's static QDQ of a transformer, stops after a few nodes instead of all of them.)"""
    window = settings.reach_window
    left = settings.max_exclusions - (len(history) - 1)
    now, then = history[-1], history[-1 - window] if len(history) > window else None
    if now is None or then is None or window <= 0:
        return ""
    sign = 1.0 if metric.higher_is_better else -1.0
    gain = sign * (now - then) / window
    if gain * left >= sign * (limit - now):
        return ""
    return (
        f"{gain:+.3g} {metric.name} per node over the last {window}, "
        f"{left} more would not reach {limit:.4g}"
    )


def _most_sensitive(reference: FloatReference, measured: Measured) -> tuple[str, str] | None:
    op_types = _dynamic_ops(measured.plan)
    ranked = rank_nodes(reference.artifact.file, measured.artifact.file, reference.x, op_types)
    for item in ranked:
        if item.node not in measured.excluded and item.score > 0:
            return item.node, f"{item.op_type}, relative error grows by {item.score:.3g} across it"
    return None


def _over_budget(recipe: Recipe, measured: Measured) -> str:
    """Why the candidate does not fit the profile's budgets (empty when it fits): for a
    microcontroller, its flash and tensor arena estimate (:mod:`compiler.budget`)."""
    profile, file = recipe.profile, measured.artifact.file
    if budget.is_microcontroller(profile) and file.suffix == ".tflite":
        return "; ".join(budget.problems(profile, budget.estimate_tflite(file)))
    limit = profile.budgets.max_model_bytes
    if limit is not None and measured.size > limit:
        return f"{measured.size} bytes, over the profile's budget of {limit}"
    return ""


def _speed_rule(recipe: Recipe, measured: Measured, settings: SearchSettings) -> bool:
    """Whether this candidate must be shown faster than fp32 (CPU profile, quantized, check on)."""
    quantized = measured.plan.precision is not Precision.FP32 and measured.plan.faster_than_fp32
    return settings.speed_check and recipe.speed_rule and quantized and measured.host is not None


def _not_faster(
    recipe: Recipe, measured: Measured, reference: FloatReference, settings: SearchSettings
) -> str:
    """The speed rule's verdict at batch N (empty when it holds or does not apply); its
    medians become the candidate's batch-N evidence."""
    if not _speed_rule(recipe, measured, settings):
        return ""
    verdict = _speed(measured, reference, settings.speed_batch, settings.speed_policy, decides=True)
    measured.float_batch_ms, measured.batch_ms = verdict.float_ms, verdict.candidate_ms
    measured.batch_size = verdict.batch
    if not verdict.faster:
        return f"not faster than fp32 on the host: {verdict.describe()}"
    return ""


def _time_winner(measured: Measured, reference: FloatReference, settings: SearchSettings) -> None:
    """The winner's host evidence, measured once: batch-1 latency, and batch-N time unless the
    speed rule already measured it (then one round of interleaved pairs)."""
    if measured.host is None:
        return
    latency = reference.seen.latency
    digest = measured.artifact.digest
    if digest not in latency:
        latency[digest] = paired_latency(
            reference.host, measured.host, reference.x, runs=settings.latency_runs
        )
    measured.float_latency_ms, measured.latency_ms = latency[digest]
    if measured.batch_ms is not None:
        return
    pairs = settings.speed_policy.round_pairs
    policy = SpeedPolicy(round_pairs=pairs, max_pairs=pairs)
    verdict = _speed(measured, reference, settings.speed_batch, policy, decides=False)
    measured.float_batch_ms, measured.batch_ms = verdict.float_ms, verdict.candidate_ms
    measured.batch_size = verdict.batch


def _speed(
    measured: Measured,
    reference: FloatReference,
    batch: int,
    policy: SpeedPolicy,
    *,
    decides: bool,
) -> SpeedVerdict:
    """The comparison with fp32 at ``batch``, remembered by artifact: a verdict measured for
    the evidence only (one round) is measured again, in full, when it has to decide."""
    assert measured.host is not None
    key = (measured.artifact.digest, batch)
    known = reference.seen.speed.get(key)
    if known is not None and (known[1] or not decides):
        return known[0]
    verdict = compare_speed(reference.host, measured.host, reference.x, batch=batch, policy=policy)
    reference.seen.speed[key] = (verdict, decides)
    return verdict


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
