"""Stream-mode micro-batching: concurrent single-example requests share one model run.

A request announces itself when it arrives (:meth:`MicroBatcher.arrival`), is validated,
hands its example over and waits. One runner thread takes what is pending once the batch
holds ``max_batch`` examples, or no announced request is still on its way, or ``max_wait``
seconds passed since the first example arrived, whichever is first; it runs them as one
batch and hands each request its own answer. While a batch runs, new requests gather for
the next one. A lone request therefore runs at once (no added latency when idle), and under
load batches fill without a fixed wait.

Examples are grouped by the model they were validated against: a swap in the middle of a
gathering batch never runs an example on a model it was not checked for. Examples of a model
with several inputs (``{name: array}``) batch like any other when every input has a dynamic
first axis; :meth:`ServedModel.run_examples` stacks them input by input, or runs them one by
one when their shapes differ (two sequence lengths).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_agent.serving import Example, ServedModel
from edgefleet.errors import EdgefleetError

log = logging.getLogger(__name__)

RunBatch = Callable[[ServedModel, list[Example]], dict[str, Any]]
"""Runs examples on a model and answers ``{"outputs": [...], "record_ids": [...], ...}``."""


@dataclass
class _Pending:
    model: ServedModel
    example: Example
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None
    error: BaseException | None = None


class Arrival:
    """One announced request; leaving the ``with`` block without submitting withdraws it."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self._open = True

    def submit(self, model: ServedModel, example: Example) -> dict[str, Any]:
        self._open = False
        return self._batcher.submit(model, example, announced=True)

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._open = False
            self._batcher.withdraw()


class MicroBatcher:
    def __init__(self, run: RunBatch, *, max_batch: int, max_wait: float) -> None:
        if max_batch < 2:
            raise ValueError("micro-batching needs max_batch >= 2")
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._closing = False
        self._arriving = 0
        self.batches = 0
        self.examples = 0
        self._thread = threading.Thread(target=self._loop, name="edgefleet-batcher", daemon=True)
        self._thread.start()

    def arrival(self) -> Arrival:
        """Announce a request that will probably submit soon (the batch waits for it)."""
        with self._cond:
            self._arriving += 1
        return Arrival(self)

    def withdraw(self) -> None:
        with self._cond:
            self._arriving -= 1
            self._cond.notify()

    def submit(
        self, model: ServedModel, example: Example, *, announced: bool = False
    ) -> dict[str, Any]:
        """Run one example in the next batch; the answer has one output and one record id."""
        item = _Pending(model, example, time.monotonic())
        with self._cond:
            if announced:
                self._arriving -= 1
            if self._closing:
                raise RuntimeError("the micro-batcher is closed")
            self._pending.append(item)
            self._cond.notify()
        item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.answer is not None
        return item.answer

    def close(self) -> None:
        """Run what is pending, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = self._pending[0].arrived + self.max_wait
            while len(self._pending) < self.max_batch and self._arriving > 0 and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            groups: dict[int, list[_Pending]] = {}
            for item in taken:
                groups.setdefault(id(item.model), []).append(item)
            for items in groups.values():
                self._run_group(items)

    def _run_group(self, items: list[_Pending]) -> None:
        try:
            answer = self._run(items[0].model, [item.example for item in items])
        except BaseException as exc:  # each request raises what the run raised
            if not isinstance(exc, EdgefleetError):
                log.exception("micro-batch of %d failed", len(items))
            for item in items:
                item.error = exc
                item.done.set()
            return
        self.batches += 1
        self.examples += len(items)
        outputs, record_ids = answer["outputs"], answer["record_ids"]
        for index, item in enumerate(items):
            item.answer = {
                **answer,
                "outputs": [outputs[index]],
                "record_ids": [record_ids[index]],
                "batched_with": len(items),
            }
            item.done.set()
