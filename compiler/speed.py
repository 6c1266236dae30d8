"""Is a quantized model faster than fp32 on this host? A noise-aware answer.

Both models run on the same batch, interleaved in pairs (the order alternating each pair), so
that machine load hits both alike. A pair is a *win* when the candidate's run took less time
than the float run next to it. If the two were equally fast, wins would follow
Binomial(n, 1/2); a sign test on the wins is therefore indifferent to how large a stall is
(a preempted run counts once, whichever model it hit), which medians of a few runs are not.

Pairs are measured in rounds until the sign test separates the two at ``alpha`` in either
direction, or until ``max_pairs`` / ``max_seconds`` is reached; at that cap the candidate
counts as faster only if the test holds at the looser ``final_alpha``. So a model that is
really faster passes on a loaded machine (it just takes more rounds), and a model that is
not shown to be faster is rejected, as the rule says.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from compiler.data import FloatArray, Samples

if TYPE_CHECKING:
    from compiler.runner import Runner


@dataclass(frozen=True)
class SpeedPolicy:
    """How long to measure and how sure to be."""

    round_pairs: int = 16
    max_pairs: int = 256
    max_seconds: float = 6.0
    alpha: float = 1e-3  # per look; a handful of looks keeps the overall error small
    final_alpha: float = 0.05


@dataclass(frozen=True)
class SpeedVerdict:
    """The comparison of a candidate with fp32 at one batch size."""

    faster: bool
    decided: bool  # the sign test separated at ``alpha`` before the cap
    pairs: int
    wins: int
    float_ms: float  # median milliseconds per batch
    candidate_ms: float
    p_value: float  # one-sided, for "the candidate is faster"
    batch: int = 1  # samples per run: the batch asked for, or 1 for a static-batch model

    @property
    def ratio(self) -> float:
        return self.candidate_ms / self.float_ms if self.float_ms > 0 else math.inf

    def describe(self) -> str:
        batch = self.batch
        per = f"{self.candidate_ms / batch:.4f} vs {self.float_ms / batch:.4f} ms per sample"
        how = "" if self.decided else ", undecided at the measuring cap"
        return (
            f"{per} at batch {batch}; faster in {self.wins} of {self.pairs} interleaved pairs "
            f"(sign test p={self.p_value:.2g}{how})"
        )


def sign_test(wins: int, pairs: int) -> float:
    """P(at least ``wins`` wins of ``pairs``) when both are equally fast (one-sided)."""
    if pairs == 0:
        return 1.0
    tail = sum(math.comb(pairs, k) for k in range(wins, pairs + 1))
    return float(tail / 2**pairs)


def decide(
    float_times: list[float], candidate_times: list[float], policy: SpeedPolicy, *, final: bool
) -> SpeedVerdict | None:
    """The verdict on paired times (seconds), or ``None`` to measure more (never when
    ``final``)."""
    pairs = len(float_times)
    wins = sum(c < f for f, c in zip(float_times, candidate_times, strict=True))
    p_faster = sign_test(wins, pairs)
    p_slower = sign_test(pairs - wins, pairs)
    float_ms = statistics.median(float_times) * 1000.0 if pairs else 0.0
    candidate_ms = statistics.median(candidate_times) * 1000.0 if pairs else 0.0
    if p_faster < policy.alpha or p_slower < policy.alpha:
        faster = p_faster < policy.alpha
        return SpeedVerdict(faster, True, pairs, wins, float_ms, candidate_ms, p_faster)
    if not final:
        return None
    faster = p_faster < policy.final_alpha
    return SpeedVerdict(faster, False, pairs, wins, float_ms, candidate_ms, p_faster)


def compare_speed(
    reference: Runner,
    candidate: Runner,
    x: FloatArray | Samples,
    *,
    batch: int,
    policy: SpeedPolicy | None = None,
) -> SpeedVerdict:
    """Measure ``candidate`` against ``reference`` on a batch of ``batch`` samples of ``x``."""
    policy = policy or SpeedPolicy()
    samples = reference.samples(x)
    sample, batch = samples.repeat(batch), samples.batch_for(batch)
    for _ in range(3):
        reference.time_feed(sample)
        candidate.time_feed(sample)
    float_times: list[float] = []
    candidate_times: list[float] = []
    started = time.monotonic()
    while True:
        for _ in range(policy.round_pairs):
            first_float = len(float_times) % 2 == 0
            order = (reference, candidate) if first_float else (candidate, reference)
            spans = []
            for model in order:
                start = time.perf_counter()
                model.time_feed(sample)
                spans.append(time.perf_counter() - start)
            float_times.append(spans[0] if first_float else spans[1])
            candidate_times.append(spans[1] if first_float else spans[0])
        final = (
            len(float_times) >= policy.max_pairs or time.monotonic() - started >= policy.max_seconds
        )
        verdict = decide(float_times, candidate_times, policy, final=final)
        if verdict is not None:
            return replace(verdict, batch=batch)
