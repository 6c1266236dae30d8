"""What happens to a prediction after the model ran: the outbox record, health, metrics.

In durable mode :meth:`Recorder.record` does it all on the request's thread, because the
record must be committed before the response. In fast mode the request only appends one
tuple to a deque (no lock unless the thread sleeps); a background thread, woken at most once
per ``interval``, digests the inputs, counts NaN outputs, feeds the health monitor, the
metrics and the sketches (once per batch), and hands the records to the outbox, in bulk. The
serving path then costs an append on top of the model run, and the loss window is
``interval`` plus the outbox's ``commit_interval``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from edge_agent.health import HealthMonitor
from edge_agent.outbox import Outbox, OutboxMode
from edge_agent.runtime.base import Array
from edge_agent.serving import Example, ServedModel, count_nan
from edge_agent.telemetry import Metrics

log = logging.getLogger(__name__)


def input_digest(example: Example) -> str:
    """sha256 over dtype, shape and the raw bytes of one example; for several inputs, over
    each input's name, dtype, shape and bytes in sorted name order."""
    if isinstance(example, dict):
        digest = hashlib.sha256()
        for name in sorted(example):
            array = example[name]
            digest.update(f"{name}\0{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()
    digest = _digest_start(example.dtype.str, example.shape).copy()
    digest.update(example.tobytes())
    return digest.hexdigest()


def _model_id(done: Done) -> int:
    return id(done[0])


def input_json(example: Example) -> str:
    """The sampled input as JSON: a nested list, or ``{name: nested list}``."""
    if isinstance(example, dict):
        return json.dumps({name: array.tolist() for name, array in example.items()})
    return json.dumps(example.tolist())


@functools.lru_cache(maxsize=64)
def _digest_start(dtype: str, shape: tuple[int, ...]) -> hashlib._Hash:
    """The sha256 state after the dtype and shape header, copied for every example."""
    return hashlib.sha256(f"{dtype}{shape}".encode())


def output_json(
    outputs: Sequence[Array], to_json: Callable[[list[Array]], object]
) -> tuple[str, bool]:
    """One example's outputs as JSON text for its record, and whether any holds a NaN.

    A single 1-D float32 output (the common case) is written with 9 significant digits,
    which give back exactly the same float32 at a third of the cost of Python's shortest
    repr, and its text tells NaN and infinity apart without another pass over the array.
    Anything else is ``json.dumps(to_json(outputs))``: the outputs as the API answers them
    (:meth:`ServedModel.to_json`)."""
    if len(outputs) == 1 and outputs[0].ndim == 1 and outputs[0].dtype == np.float32:
        text = ",".join(map(_FLOAT32.__mod__, outputs[0].tolist()))
        if "n" not in text:  # no "nan" nor "inf", which JSON cannot hold
            return f"[{text}]", False
    return json.dumps(to_json(list(outputs))), count_nan([outputs]) > 0


_FLOAT32 = "%.9g"


class RecordEncoder:
    """Writes records as JSON text; the members one model's records share are encoded once.
    Thread-safe: the cache is one (model, text) pair, replaced as a whole."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._cache: tuple[ServedModel | None, str] = (None, "")

    def shared(self, model: ServedModel) -> str:
        cached_model, text = self._cache
        if cached_model is not model:
            members = {
                "device": self.device_id,
                "model": model.name,
                "model_version": model.version,
                "artifact_sha256": model.artifact_sha256,
            }
            text = json.dumps(members)[1:-1] + ", "
            self._cache = (model, text)
        return text


class RecordIds:
    """32 hex digits like ``uuid4().hex``: 64 random bits per process, then a counter.

    Ids are formatted ``BLOCK`` at a time: a single-example request takes one with a list
    pop (atomic, no lock), which costs the serving path far less than formatting an id right
    after the model ran (when little of Python is still in the CPU caches). Ranges of the
    counter are reserved under a lock, so no id is ever handed out twice."""

    BLOCK = 256

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._next = int.from_bytes(os.urandom(4), "big") << 16
        self._lock = threading.Lock()
        self._ready: list[str] = []
        """Formatted ids, the next one last."""

    def take(self, count: int) -> list[str]:
        if count == 1:
            ready = self._ready
            while True:
                try:
                    return [ready.pop()]
                except IndexError:
                    with self._lock:
                        if not ready:
                            ready.extend(reversed(self._reserve(self.BLOCK)))
        with self._lock:
            return self._reserve(count)

    def _reserve(self, count: int) -> list[str]:
        """``count`` fresh ids; the caller holds the lock."""
        start, self._next = self._next, self._next + count
        prefix = self._prefix
        return [f"{prefix}{n:016x}" for n in range(start, start + count)]


Done = tuple[ServedModel, Sequence[Example], Sequence[Sequence[Array]], list[str], float, float]
"""One prediction (one or more examples) waiting to be recorded: the model, the examples,
per example its output arrays in manifest order, the record ids, the run's latency in ms and
the wall-clock time. A plain tuple: a dataclass's ``__init__`` costs the serving path
several microseconds once the model run has pushed Python out of the CPU caches."""


class Recorder:
    """Records predictions; durable: inline, fast: in bulk on a background thread."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        metrics: Metrics,
        monitor: HealthMonitor,
        device_id: str,
        input_sample_rate: float,
        on_recorded: Callable[[], None],
        interval: float = 0.01,
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.monitor = monitor
        self.device_id = device_id
        self.input_sample_rate = input_sample_rate
        self.on_recorded = on_recorded
        self.interval = interval
        self.durable = outbox.config.mode is OutboxMode.DURABLE
        self._encoder = RecordEncoder(device_id)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: deque[Done] = deque()
        """Appended by serving threads without a lock (atomic), emptied by the thread."""
        self._idle = False
        """Set (under the lock) before the thread checks ``_pending`` and sleeps, so a
        serving thread that appended and then reads False knows the thread will see it."""
        self._closing = False
        self._thread: threading.Thread | None = None
        if not self.durable:
            self._thread = threading.Thread(target=self._loop, name="edgefleet-record", daemon=True)
            self._thread.start()

    def record(
        self,
        model: ServedModel,
        examples: Sequence[Example],
        results: Sequence[Sequence[Array]],
        record_ids: list[str],
        latency_ms: float,
        ts: float,
    ) -> bool | None:
        """Durable: True when the records are committed, False when the outbox dropped
        them. Fast: None (the commit follows the response)."""
        done = (model, examples, results, record_ids, latency_ms, ts)
        if self.durable:
            return self._process([done])
        self._pending.append(done)
        if self._idle:
            with self._lock:
                if self._idle:
                    self._idle = False
                    self._cond.notify()
        return None

    def _loop(self) -> None:
        pending = self._pending
        while True:
            with self._lock:
                self._idle = True
                while not pending and not self._closing:
                    self._cond.wait()
                self._idle = False
                if not pending:
                    return
                if not self._closing:  # let an interval's predictions gather
                    self._cond.wait(self.interval)
            items = [pending.popleft() for _ in range(len(pending))]
            try:
                self._process(items)
            except Exception:
                log.exception("recording %d predictions failed", len(items))

    def _process(self, items: Sequence[Done]) -> bool:
        rows: list[str] = []
        for _, run in itertools.groupby(items, key=_model_id):
            self._encode(list(run), rows)
        ticket = self.outbox.write_rows(rows)
        self.on_recorded()
        return ticket.stored

    def _encode(self, items: list[Done], rows: list[str]) -> None:
        """Append the records of predictions of one model to ``rows``; feed the health
        monitor, the metrics and the sketches once for all of them (one lock each)."""
        model = items[0][0]
        rate = self.input_sample_rate
        shared = self._encoder.shared(model)
        calls: list[tuple[float, int, int]] = []
        inputs: list[Example] = []
        outputs: list[Array] = []
        for _, examples, results, record_ids, latency_ms, ts in items:
            tail = f', "latency_ms": {latency_ms / len(examples)!r}, "ts": {ts!r}}}'
            nan = 0
            for record_id, example, result in zip(record_ids, examples, results, strict=True):
                text, has_nan = output_json(result, model.to_json)
                nan += has_nan
                sample = input_json(example) if rate and random.random() < rate else "null"
                rows.append(
                    f'{{"record_id": "{record_id}", {shared}"input_digest": '
                    f'"{input_digest(example)}", "input": {sample}, "output": {text}{tail}'
                )
            calls.append((latency_ms, len(examples), nan))
            inputs.extend(examples)
            outputs.extend(result[0] for result in results)
        self.monitor.record_calls(model.artifact_sha256, calls)
        self.metrics.record_calls(calls, inputs, outputs)

    def flush(self, timeout: float = 10.0) -> bool:
        """Fast mode: wait until everything recorded so far reached the outbox's queue."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pending and (self._idle or self._thread is None):
                return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        """Record what is queued and stop the background thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
