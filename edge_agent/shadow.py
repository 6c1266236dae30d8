"""Shadow mode: a candidate model runs beside the active one on a sampled share of requests.

The serving path only calls :meth:`ShadowRunner.offer`, which samples and puts the request
in a bounded queue without waiting (a full queue skips the sample and counts it), so the
candidate never slows or fails a request. A worker thread runs the candidate and compares its
outputs with what the active model answered (:func:`compare_outputs`): top-1 agreement and the
mean absolute difference, plus the candidate's latency and errors, per telemetry window
(:meth:`ShadowRunner.take`). Models with several inputs are mirrored input by input; with
several outputs every output is compared, in the manifest's order, and an example agrees only
when every output does. A candidate whose input names differ from the active model's is not
run: the samples are counted as skipped and the reason logged once.

:func:`check_memory` refuses to start a shadow when memory cannot hold both models. What the
process may still use is the least of: what the OS reports available, the headroom under the
process's address-space limit (``RLIMIT_AS``, e.g. ``ulimit -v``) and under its cgroup's memory
limit (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), and the profile's declared memory.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import resource
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from edge_agent.errors import RuntimeBackendError, UpdateError
from edge_agent.runtime.base import Array
from edge_agent.serving import Example, ServedModel
from edgefleet.protocol.messages import ShadowStats
from hardware_profiles.schema import HardwareProfile

log = logging.getLogger(__name__)

MEMORY_FACTOR = 4.0  # resident bytes per byte of model file, a conservative estimate
CGROUP_ROOT = Path("/sys/fs/cgroup")
_CGROUP_FILES = (  # (limit, usage): cgroup v2, then v1
    ("memory.max", "memory.current"),
    ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
)
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number
_Item = tuple[list[Example], list[Sequence[Array]]]


def model_bytes(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else (path.stat().st_size)
    )


def address_space_headroom() -> int | None:
    """Bytes left under this process's ``RLIMIT_AS`` soft limit; None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    vms: int = psutil.Process().memory_info().vms
    return max(0, soft - vms)


def cgroup_headroom(root: Path = CGROUP_ROOT) -> int | None:
    """Bytes left under the memory limit of the cgroup the process sees; None without one."""
    for limit_name, usage_name in _CGROUP_FILES:
        try:
            limit_text = (root / limit_name).read_text().strip()
            usage = int((root / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _UNLIMITED:
            return None
        return max(0, int(limit_text) - usage)
    return None


def memory_limits(available: int | None = None) -> list[tuple[str, int]]:
    """(what, bytes the process may still use) for each limit that applies to it."""
    free = psutil.virtual_memory().available if available is None else available
    limits = [("available memory", int(free))]
    address_space = address_space_headroom()
    if address_space is not None:
        limits.append(("the headroom under the address-space limit (RLIMIT_AS)", address_space))
    cgroup = cgroup_headroom()
    if cgroup is not None:
        limits.append(("the headroom under the cgroup memory limit", cgroup))
    return limits


def check_memory(
    candidate_bytes: int,
    active_bytes: int,
    profile: HardwareProfile,
    *,
    factor: float = MEMORY_FACTOR,
    available: int | None = None,
) -> None:
    """Raise UpdateError when both models (file size x ``factor``) do not fit in memory.

    The limit is the least of :func:`memory_limits` (``available`` replaces what the OS
    reports) and the profile's declared application memory (``hardware.memory_mb``).
    """
    limits = memory_limits(available)
    declared = profile.hardware.memory_mb
    if declared is not None:
        limits.append((f"profile {profile.tag} memory", declared << 20))
    need = int((candidate_bytes + active_bytes) * factor)
    name, limit = min(limits, key=lambda item: item[1])
    if need > limit:
        raise UpdateError(
            f"shadow: both models need about {need >> 20} MiB ({factor:g} x "
            f"{(candidate_bytes + active_bytes) >> 10} KiB of model files) but {name} is "
            f"{limit >> 20} MiB; not starting the shadow"
        )


@dataclass
class _Window:
    compared: int = 0
    agree: int = 0
    abs_diff_sum: float = 0.0
    errors: int = 0
    skipped: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def compare_outputs(mine: Sequence[Array], theirs: Sequence[Array]) -> tuple[bool, float]:
    """One example's outputs from the candidate against the active model's: (whether the top-1
    (flat argmax) agrees on every output, the mean absolute difference averaged over the
    outputs). Outputs that cannot be compared (a different count or shape, or empty) disagree
    and add no difference."""
    if len(mine) != len(theirs):
        return False, 0.0
    agree, diffs = True, []
    for candidate, active in zip(mine, theirs, strict=True):
        a, b = np.asarray(candidate, np.float64), np.asarray(active, np.float64)
        if a.shape != b.shape or not a.size:
            agree = False
            continue
        diffs.append(float(np.mean(np.abs(a - b))))
        agree = agree and int(np.argmax(a)) == int(np.argmax(b))
    return agree, sum(diffs) / len(diffs) if diffs else 0.0


class ShadowRunner:
    def __init__(
        self, candidate: ServedModel, *, sample_rate: float = 1.0, queue_size: int = 256
    ) -> None:
        self.candidate = candidate
        self.sample_rate = sample_rate
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._window = _Window()
        self._total = _Window()
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="edgefleet-shadow", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info(
            "shadow: running %s %s on %.0f%% of requests",
            self.candidate.name,
            self.candidate.version,
            self.sample_rate * 100,
        )

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=5)
        self._thread.join(timeout=5)

    def offer(self, examples: Sequence[Example], results: Sequence[Sequence[Array]]) -> None:
        """Called on the serving path: sample, enqueue without blocking, return."""
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return
        try:
            self._queue.put_nowait((list(examples), list(results)))
        except queue.Full:
            with self._lock:
                self._window.skipped += 1

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._compare(*item)
            finally:
                self._queue.task_done()

    def _compare(self, examples: list[Example], primary: list[Sequence[Array]]) -> None:
        reason = self._mismatch(examples[0]) if examples else None
        if reason is not None:
            if not self._warned:
                self._warned = True
                log.warning("shadow: skipping mirrored requests: %s", reason)
            with self._lock:
                self._window.skipped += len(examples)
            return
        started = time.perf_counter()
        try:
            results = self.candidate.run_examples(examples)
        except RuntimeBackendError as exc:
            log.debug("shadow candidate failed: %s", exc)
            with self._lock:
                self._window.errors += 1
                self._total.errors += 1
            return
        latency_ms = (time.perf_counter() - started) * 1000.0
        agree, diff = 0, 0.0
        for mine, theirs in zip(results, primary, strict=True):
            same_top1, abs_diff = compare_outputs(mine, theirs)
            agree += same_top1
            diff += abs_diff
        with self._lock:
            for window in (self._window, self._total):
                window.compared += len(examples)
                window.agree += agree
                window.abs_diff_sum += diff
            self._window.latencies_ms.append(latency_ms)

    def _mismatch(self, example: Example) -> str | None:
        """Why the candidate cannot take the active model's examples, or None."""
        names = self.candidate.input_names
        given = tuple(sorted(example)) if isinstance(example, dict) else None
        if given is None and len(names) == 1:
            return None
        if given is not None and given == tuple(sorted(names)):
            return None
        return (
            f"the candidate {self.candidate.name} {self.candidate.version} has inputs "
            f"{', '.join(map(repr, names))} but the active model's requests carry "
            f"{', '.join(map(repr, given)) if given else 'one unnamed input'}"
        )

    def totals(self) -> ShadowStats:
        """Agreement since the shadow started (not reset by :meth:`take`; no latency)."""
        with self._lock:
            total = self._total
            compared, agree, diff, errors = (
                total.compared,
                total.agree,
                total.abs_diff_sum,
                total.errors,
            )
        return ShadowStats(
            model=self.candidate.name,
            version=self.candidate.version,
            compared=compared,
            top1_agreement=agree / compared if compared else None,
            mean_abs_diff=diff / compared if compared else None,
            errors=errors,
        )

    def take(self) -> ShadowStats:
        """Close the window: agreement and latency since the last call."""
        with self._lock:
            window, self._window = self._window, _Window()
        latencies = np.asarray(window.latencies_ms, dtype=np.float64)
        compared = window.compared
        return ShadowStats(
            model=self.candidate.name,
            version=self.candidate.version,
            compared=compared,
            top1_agreement=window.agree / compared if compared else None,
            mean_abs_diff=window.abs_diff_sum / compared if compared else None,
            latency_p50_ms=float(np.percentile(latencies, 50)) if latencies.size else None,
            latency_p95_ms=float(np.percentile(latencies, 95)) if latencies.size else None,
            errors=window.errors,
        )
