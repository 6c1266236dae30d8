"""What happens to a prediction after the model ran: the outbox record, health, metrics.

In durable mode :meth:`Recorder.record` does it all on the request's thread, because the
record must be committed before the response. In fast mode the request only appends one
item to a list; a background thread, woken at most once per ``interval``, digests the
inputs, counts NaN outputs, feeds the health monitor, the metrics and the sketches, and
hands the records to the outbox, in bulk. The serving path then costs a lock and an append
on top of the model run, and the loss window is ``interval`` plus the outbox's
``commit_interval``.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

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


def input_json(example: Example) -> str:
    """The sampled input as JSON: a nested list, or ``{name: nested list}``."""
    if isinstance(example, dict):
        return json.dumps({name: array.tolist() for name, array in example.items()})
    return json.dumps(example.tolist())


@functools.lru_cache(maxsize=64)
def _digest_start(dtype: str, shape: tuple[int, ...]) -> hashlib._Hash:
    """The sha256 state after the dtype and shape header, copied for every example."""
    return hashlib.sha256(f"{dtype}{shape}".encode())


def output_json(outputs: Sequence[Array], value: object) -> tuple[str, bool]:
    """One example's outputs as JSON text for its record, and whether any holds a NaN.

    A single 1-D float32 output (the common case) is written with 9 significant digits,
    which give back exactly the same float32 at a third of the cost of Python's shortest
    repr, and its text tells NaN and infinity apart without another pass over the array.
    Anything else is ``json.dumps`` of ``value`` (the response's JSON of the outputs)."""
    if len(outputs) == 1 and outputs[0].ndim == 1 and outputs[0].dtype == np.float32:
        text = ",".join(map(_FLOAT32.__mod__, outputs[0].tolist()))
        if "n" not in text:  # no "nan" nor "inf", which JSON cannot hold
            return f"[{text}]", False
    return json.dumps(value), count_nan([outputs]) > 0


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
    """32 hex digits like ``uuid4().hex``: 64 random bits per process, then a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big") << 16)

    def take(self, count: int) -> list[str]:
        prefix, counter = self._prefix, self._counter
        return [f"{prefix}{next(counter):016x}" for _ in range(count)]


@dataclass
class Done:
    """One prediction (one or more examples) waiting to be recorded."""

    model: ServedModel
    examples: Sequence[Example]
    results: Sequence[Sequence[Array]]
    outputs: list[object]
    record_ids: list[str]
    latency_ms: float
    ts: float


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
        self._cond = threading.Condition()
        self._items: list[Done] = []
        self._idle = False
        self._closing = False
        self._thread: threading.Thread | None = None
        if not self.durable:
            self._thread = threading.Thread(target=self._loop, name="edgefleet-record", daemon=True)
            self._thread.start()

    def record(self, done: Done) -> bool | None:
        """Durable: True when the records are committed, False when the outbox dropped
        them. Fast: None (the commit follows the response)."""
        if self.durable:
            return self._process([done])
        with self._cond:
            self._items.append(done)
            if self._idle:
                self._idle = False
                self._cond.notify()
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                if not self._items:
                    return
                if not self._closing:
                    self._cond.wait(self.interval)
                items, self._items = self._items, []
            try:
                self._process(items)
            except Exception:
                log.exception("recording %d predictions failed", len(items))

    def _process(self, items: Sequence[Done]) -> bool:
        rows: list[str] = []
        rate = self.input_sample_rate
        sketched: tuple[list[Array], list[Array]] = ([], [])  # examples of one model
        for index, done in enumerate(items):
            model = done.model
            if index and model is not items[index - 1].model:
                self.metrics.observe_examples(*sketched)
                sketched = ([], [])
            if not model.multi_input:  # per-feature input sketches need one input tensor
                sketched[0].extend(cast(Sequence[Array], done.examples))
            sketched[1].extend(result[0] for result in done.results)
            shared = self._encoder.shared(model)
            tail = f', "latency_ms": {done.latency_ms / len(done.examples)!r}, "ts": {done.ts!r}}}'
            nan = 0
            for record_id, example, result, output in zip(
                done.record_ids, done.examples, done.results, done.outputs, strict=True
            ):
                text, has_nan = output_json(result, output)
                nan += has_nan
                sample = input_json(example) if rate and random.random() < rate else "null"
                rows.append(
                    f'{{"record_id": "{record_id}", {shared}"input_digest": '
                    f'"{input_digest(example)}", "input": {sample}, "output": {text}{tail}'
                )
            self.monitor.record(model.artifact_sha256, done.latency_ms, nan=nan)
            self.metrics.record_request(done.latency_ms, count=len(done.examples), nan=nan)
        self.metrics.observe_examples(*sketched)
        ticket = self.outbox.write_rows(rows)
        self.on_recorded()
        return ticket.stored

    def flush(self, timeout: float = 10.0) -> bool:
        """Fast mode: wait until everything recorded so far reached the outbox's queue."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._items and (self._idle or self._thread is None):
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
