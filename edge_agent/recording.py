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
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, cast

import numpy as np

from edge_agent.health import HealthMonitor
from edge_agent.outbox import Outbox, OutboxMode
from edge_agent.runtime.base import Array
from edge_agent.segments import Deferred, Segment, columns_of, nan_rows, split_every
from edge_agent.serving import BatchResults, Example, ServedModel, count_nan
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
    """The members one model's records share (device, model, version, artifact hash), as a
    mapping and as JSON text, built once per model. Thread-safe: the cache is one tuple,
    replaced as a whole."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._cache: tuple[ServedModel | None, dict[str, str], str] = (None, {}, "")

    def _members(self, model: ServedModel) -> tuple[dict[str, str], str]:
        cached_model, members, text = self._cache
        if cached_model is not model:
            members = {
                "device": self.device_id,
                "model": model.name,
                "model_version": model.version,
                "artifact_sha256": model.artifact_sha256,
            }
            text = json.dumps(members)[1:-1] + ", "
            self._cache = (model, members, text)
        return members, text

    def shared(self, model: ServedModel) -> str:
        """The shared members as the start of a JSON object's text (``"device": ..., ``)."""
        return self._members(model)[1]

    def members(self, model: ServedModel) -> dict[str, str]:
        return self._members(model)[0]


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
        if count < 16:
            prefix = self._prefix
            return [f"{prefix}{n:016x}" for n in range(start, start + count)]
        # Many at once: both halves of every id as big-endian uint64 pairs, hex in one call.
        pairs = np.empty((count, 2), ">u8")
        pairs[:, 0] = int(self._prefix, 16)
        pairs[:, 1] = np.arange(start, start + count, dtype=np.uint64)
        return split_every(pairs.tobytes().hex(), 32)


PACK_FROM = 8
"""Records in one write from which they are stored packed in columns: below it, encoding a
few records as JSON text costs less than building the columns."""


class Records(NamedTuple):
    """Records of one model, one entry per record in each list."""

    record_ids: list[str]
    input_digests: list[str]
    results: Sequence[Sequence[Array]]
    """Each record's output arrays, in manifest order."""
    latency_ms: list[float]
    ts: list[float]


def nan_count(results: Sequence[Sequence[Array]]) -> int:
    """How many examples have a NaN in any float output."""
    if isinstance(results, BatchResults):
        flags = np.zeros(len(results), dtype=bool)
        for whole in results.batch:
            flags |= nan_rows(whole)
        return int(flags.sum())
    return count_nan(results)


def records_segment(
    members: Mapping[str, str] | None,
    shared: str,
    to_json: Callable[[list[Array]], object],
    records: Records,
    sampled: Mapping[int, str],
) -> Segment:
    """The records as one outbox segment.

    Packed in columns (:mod:`edge_agent.segments`) when there are at least ``PACK_FROM`` and
    ``members`` is given (one output per record), else one JSON line each: ``shared`` is
    :meth:`RecordEncoder.shared`, ``to_json`` writes outputs that :func:`output_json` does
    not, ``sampled`` holds the sampled inputs' JSON by record index."""
    results = records.results
    if members is not None and len(results) >= PACK_FROM:
        whole = results.batch if isinstance(results, BatchResults) else None
        columns = columns_of(
            members,
            records.record_ids,
            records.input_digests,
            whole[0] if whole is not None else [outputs[0] for outputs in results],
            records.latency_ms,
            records.ts,
            sampled,
        )
        if columns is not None:
            return Segment.of_columns(columns)
    rows: list[str] = []
    for index, (record_id, digest, outputs, latency_ms, ts) in enumerate(
        zip(*records, strict=True)
    ):
        text, _ = output_json(outputs, to_json)
        rows.append(
            f'{{"record_id": "{record_id}", {shared}"input_digest": "{digest}", '
            f'"input": {sampled.get(index, "null")}, "output": {text}, '
            f'"latency_ms": {latency_ms!r}, "ts": {ts!r}}}'
        )
    return Segment.of_lines(rows)


Done = tuple[ServedModel, Sequence[Example], Sequence[Sequence[Array]], list[str], float, float]
"""One prediction (one or more examples) waiting to be recorded: the model, the examples,
per example its output arrays in manifest order, the record ids, the run's latency in ms and
the wall-clock time. A plain tuple: a dataclass's ``__init__`` costs the serving path
several microseconds once the model run has pushed Python out of the CPU caches."""


def _joined_results(items: list[Done]) -> Sequence[Sequence[Array]]:
    """The predictions' results, in order: one :class:`BatchResults` when every prediction
    ran as one batch (so that their outputs are stored whole, not row by row)."""
    parts = [item[2] for item in items]
    if len(parts) == 1:
        return parts[0]
    rows = cast(list[list[Array]], [row for part in parts for row in part])
    if not all(isinstance(part, BatchResults) for part in parts):
        return rows
    batches = [cast(BatchResults, part).batch for part in parts]
    return BatchResults(rows, [np.concatenate(whole) for whole in zip(*batches, strict=True)])


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
        segments = [self._encode(list(run)) for _, run in itertools.groupby(items, key=_model_id)]
        ticket = self.outbox.write_segments(segments)
        self.on_recorded()
        return ticket.stored

    def _encode(self, items: list[Done]) -> Deferred:
        """The records of predictions of one model, for the outbox to encode as one segment;
        feeds the health monitor, the metrics and the sketches once for all of them (one lock
        each)."""
        model = items[0][0]
        rate = self.input_sample_rate
        record_ids: list[str] = []
        latency: list[float] = []
        times: list[float] = []
        inputs: list[Example] = []
        sampled: dict[int, str] = {}
        for _, examples, _, ids, latency_ms, ts in items:
            count = len(examples)
            if rate:
                for index, example in enumerate(examples, start=len(inputs)):
                    if random.random() < rate:
                        sampled[index] = input_json(example)
            record_ids.extend(ids)
            latency.extend([latency_ms / count] * count)
            times.extend([ts] * count)
            inputs.extend(examples)
        results = _joined_results(items)
        encode = functools.partial(
            records_segment,
            self._encoder.members(model) if model.single_output else None,
            self._encoder.shared(model),
            model.to_json,
            Records(record_ids, [input_digest(x) for x in inputs], results, latency, times),
            sampled,
        )
        calls = [
            (latency_ms, len(examples), nan_count(outputs))
            for _, examples, outputs, _, latency_ms, _ in items
        ]
        self.monitor.record_calls(model.artifact_sha256, calls)
        self.metrics.record_calls(calls, inputs, [outputs[0] for outputs in results])
        return Deferred(len(record_ids), encode)

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
