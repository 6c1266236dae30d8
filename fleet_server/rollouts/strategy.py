"""Typed rollout strategies and gates (pydantic discriminated unions, checked on input).

A strategy expands to a list of :class:`WavePlan`: how many devices the rollout covers after
each wave (cumulative), how long to bake, the wave's device timeout, whether the wave runs the
new version in *shadow* (beside the current one) instead of installing it, and its gates.

Gates are strategy objects: each success condition and abort condition is a small model with a
``check(metrics)`` method; nothing is parsed from strings at evaluation time.

Scope: every gate of a wave, success and abort alike, judges *that wave's own devices* (the
ones the wave added), never all devices so far: installed and failed shares and counts are over
the wave's deployments, error rate, latency, agreement and drift over the telemetry of the
wave's devices since the wave started. Earlier waves already passed their own gates, and
pooling would let their healthy devices dilute a problem that only the new devices show (a
profile or site only present in a later wave). The baseline of the latency ratio and of drift
is the previous version over the whole cohort. Example::

    {"kind": "canary", "waves": [
        {"size": {"kind": "percent", "value": 10}, "bake_s": 600},
        {"size": {"kind": "percent", "value": 50}, "bake_s": 600},
        {"size": {"kind": "percent", "value": 100}, "bake_s": 0}],
     "gates": {"success": [{"kind": "installed", "min_fraction": 0.9},
                           {"kind": "error_rate", "max": 0.01},
                           {"kind": "latency_ratio", "max": 1.5}],
               "abort": [{"kind": "failed_fraction", "min": 0.2}]}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet_server.rollouts.metrics import WaveMetrics


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- wave sizes (cumulative share of the cohort covered once the wave ran) --------------------


class Percent(_Spec):
    kind: Literal["percent"] = "percent"
    value: float = Field(gt=0, le=100)

    def devices(self, cohort_size: int) -> int:
        return min(cohort_size, math.ceil(cohort_size * self.value / 100))


class Count(_Spec):
    kind: Literal["count"] = "count"
    value: int = Field(ge=1)

    def devices(self, cohort_size: int) -> int:
        return min(cohort_size, self.value)


WaveSize = Annotated[Percent | Count, Field(discriminator="kind")]

# -- gate results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    gate: str
    ok: bool
    value: float | None
    threshold: float
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "gate": self.gate,
            "ok": self.ok,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
        }


# -- success conditions ----------------------------------------------------------------------


class MinInstalled(_Spec):
    """At least ``min_fraction`` of the wave's devices (with an artifact) committed."""

    kind: Literal["installed"] = "installed"
    min_fraction: float = Field(default=1.0, ge=0, le=1)

    def check(self, m: WaveMetrics) -> GateResult:
        value = m.installed / m.with_artifact if m.with_artifact else 1.0
        return GateResult(
            self.kind,
            value >= self.min_fraction,
            value,
            self.min_fraction,
            f"{m.installed}/{m.with_artifact} installed",
        )


class MaxErrorRate(_Spec):
    """(errors + NaN outputs) / requests of the wave's devices on the new version <= ``max``."""

    kind: Literal["error_rate"] = "error_rate"
    max: float = Field(ge=0, le=1)

    def check(self, m: WaveMetrics) -> GateResult:
        if m.requests == 0:
            return GateResult(self.kind, True, None, self.max, "no requests observed")
        value = (m.errors + m.nan_outputs) / m.requests
        return GateResult(
            self.kind,
            value <= self.max,
            value,
            self.max,
            f"{m.errors} errors + {m.nan_outputs} NaN in {m.requests} requests",
        )


class MaxLatencyRatio(_Spec):
    """p95 latency of the new version is at most ``max`` times the previous version's."""

    kind: Literal["latency_ratio"] = "latency_ratio"
    max: float = Field(gt=0)

    def check(self, m: WaveMetrics) -> GateResult:
        if m.p95_ms is None or not m.baseline_p95_ms:
            return GateResult(self.kind, True, None, self.max, "no latency baseline")
        value = m.p95_ms / m.baseline_p95_ms
        return GateResult(
            self.kind,
            value <= self.max,
            value,
            self.max,
            f"p95 {m.p95_ms:.2f} ms vs {m.baseline_p95_ms:.2f} ms before",
        )


class MinShadowAgreement(_Spec):
    """Top-1 agreement of the shadow candidate with the active model is at least ``min``."""

    kind: Literal["shadow_agreement"] = "shadow_agreement"
    min: float = Field(ge=0, le=1)

    def check(self, m: WaveMetrics) -> GateResult:
        if m.shadow_agreement is None:
            return GateResult(self.kind, False, None, self.min, "no shadow comparisons reported")
        value = m.shadow_agreement
        return GateResult(
            self.kind,
            value >= self.min,
            value,
            self.min,
            f"{value:.3f} over {m.shadow_compared} comparisons",
        )


class MaxDrift(_Spec):
    """The drift score against the previous version is at most ``max``: the largest population
    stability index (PSI) of any input or output feature (binning in :mod:`.metrics`). PSI below
    0.1 is read as no shift, 0.1-0.25 as moderate, above 0.25 as major."""

    kind: Literal["drift"] = "drift"
    max: float = Field(ge=0)

    def check(self, m: WaveMetrics) -> GateResult:
        if m.drift is None:
            return GateResult(self.kind, True, None, self.max, "no feature sketches to compare")
        return GateResult(
            self.kind,
            m.drift <= self.max,
            m.drift,
            self.max,
            f"largest PSI of any feature {m.drift:.3f}",
        )


SuccessCondition = Annotated[
    MinInstalled | MaxErrorRate | MaxLatencyRatio | MinShadowAgreement | MaxDrift,
    Field(discriminator="kind"),
]

# -- abort conditions (checked on every tick while a wave runs) -------------------------------


class FailedFraction(_Spec):
    """Abort when at least ``min`` of the wave's devices (with an artifact) failed."""

    kind: Literal["failed_fraction"] = "failed_fraction"
    min: float = Field(gt=0, le=1)

    def check(self, m: WaveMetrics) -> GateResult:
        value = m.failed / m.with_artifact if m.with_artifact else 0.0
        return GateResult(
            self.kind, value >= self.min, value, self.min, f"{m.failed}/{m.with_artifact} failed"
        )


class FailedDevices(_Spec):
    """Abort when at least ``min`` devices of the wave failed."""

    kind: Literal["failed_devices"] = "failed_devices"
    min: int = Field(ge=1)

    def check(self, m: WaveMetrics) -> GateResult:
        return GateResult(
            self.kind,
            m.failed >= self.min,
            float(m.failed),
            float(self.min),
            f"{m.failed} device(s) failed",
        )


AbortCondition = Annotated[FailedFraction | FailedDevices, Field(discriminator="kind")]


class Action(StrEnum):
    NEXT_WAVE = "next_wave"
    PAUSE = "pause"
    ROLL_BACK = "roll_back"


def _default_success() -> list[SuccessCondition]:
    return [MinInstalled()]


def _default_abort() -> list[AbortCondition]:
    return [FailedFraction(min=0.5)]


class Gates(_Spec):
    success: list[SuccessCondition] = Field(default_factory=_default_success)
    abort: list[AbortCondition] = Field(default_factory=_default_abort)
    on_success: Literal[Action.NEXT_WAVE, Action.PAUSE] = Action.NEXT_WAVE
    on_failure: Literal[Action.PAUSE, Action.ROLL_BACK] = Action.ROLL_BACK


class WaveStep(_Spec):
    size: WaveSize
    bake_s: float = Field(default=60.0, ge=0)
    timeout_s: float = Field(
        default=600.0, gt=0, description="A device without an outcome by then no longer holds it."
    )
    gates: Gates | None = Field(default=None, description="Overrides the strategy's gates.")


# -- strategies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WavePlan:
    size: Percent | Count
    bake_s: float
    timeout_s: float
    shadow: bool
    gates: Gates


class AllAtOnce(_Spec):
    kind: Literal["all_at_once"] = "all_at_once"
    bake_s: float = Field(default=60.0, ge=0)
    timeout_s: float = Field(default=600.0, gt=0)
    gates: Gates = Field(default_factory=Gates)

    def plan(self) -> list[WavePlan]:
        return [WavePlan(Percent(value=100), self.bake_s, self.timeout_s, False, self.gates)]


class Canary(_Spec):
    kind: Literal["canary"] = "canary"
    waves: list[WaveStep] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates)

    def plan(self) -> list[WavePlan]:
        plans = [
            WavePlan(step.size, step.bake_s, step.timeout_s, False, step.gates or self.gates)
            for step in self.waves
        ]
        last = plans[-1]
        if not (isinstance(last.size, Percent) and last.size.value == 100):
            # The last wave always covers the rest of the cohort.
            plans.append(WavePlan(Percent(value=100), 0.0, last.timeout_s, False, last.gates))
        return plans


class ShadowThenPromote(_Spec):
    """Run the candidate in shadow on a share of the cohort, then install it if it agrees."""

    kind: Literal["shadow_then_promote"] = "shadow_then_promote"
    shadow: WaveStep = Field(
        default_factory=lambda: WaveStep(size=Percent(value=100), bake_s=300.0)
    )
    sample_rate: float = Field(default=1.0, gt=0, le=1)
    min_agreement: float = Field(default=0.95, ge=0, le=1)
    promote: list[WaveStep] = Field(
        default_factory=lambda: [WaveStep(size=Percent(value=100), bake_s=60.0)]
    )
    gates: Gates = Field(default_factory=Gates)

    def plan(self) -> list[WavePlan]:
        shadow_gates = self.shadow.gates or Gates(
            success=[MinShadowAgreement(min=self.min_agreement)],
            abort=[],
            on_failure=self.gates.on_failure,
        )
        if not any(isinstance(gate, MinShadowAgreement) for gate in shadow_gates.success):
            shadow_gates = shadow_gates.model_copy(
                update={
                    "success": [*shadow_gates.success, MinShadowAgreement(min=self.min_agreement)]
                }
            )
        plans = [
            WavePlan(
                self.shadow.size, self.shadow.bake_s, self.shadow.timeout_s, True, shadow_gates
            )
        ]
        plans += Canary(waves=self.promote, gates=self.gates).plan()
        return plans


Strategy = Annotated[AllAtOnce | Canary | ShadowThenPromote, Field(discriminator="kind")]


class StrategyHolder(BaseModel):
    """Parses a stored strategy back (the database keeps its JSON)."""

    strategy: Strategy
