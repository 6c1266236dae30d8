"""Deliver the outbox to the fleet server with end-to-end acknowledgements.

Records go out in :class:`PredictionBatch` messages of up to ``batch_size`` and are marked in
flight with their send time. Only an :class:`Ack` from the server removes them from the
outbox (a broker PUBACK proves nothing); records not acked within ``ack_timeout`` are sent
again, and a (re)connect sends everything still pending. The server stores by (device, seq),
so a duplicate costs bandwidth, never a double count.

Each re-send of a record doubles its wait, up to ``max_ack_timeout``: a server that falls
behind (after an outage, thousands of records arrive at once) gets time to catch up instead
of a growing flood of duplicates that delays its acks further.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from edge_agent.outbox import Outbox
from edgefleet.protocol.messages import Ack, PredictionBatch, PredictionRecord

log = logging.getLogger(__name__)


class Delivery:
    def __init__(
        self,
        *,
        outbox: Outbox,
        publish: Callable[[PredictionBatch], bool],
        connected: Callable[[], bool],
        batch_size: int = 200,
        ack_timeout: float = 5.0,
        max_ack_timeout: float = 60.0,
        max_inflight: int = 2000,
        poll_interval: float = 0.5,
    ) -> None:
        self._outbox = outbox
        self._publish = publish
        self._connected = connected
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.max_ack_timeout = max(ack_timeout, max_ack_timeout)
        self.max_inflight = max_inflight
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._inflight: dict[int, float] = {}  # seq -> when it is due for a re-send
        self._attempts: dict[int, int] = {}  # seq -> sends so far (while in flight)
        self._cursor = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgefleet-delivery", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def wake(self) -> None:
        """New records are in the outbox: send them now rather than at the next poll."""
        self._wake.set()

    def reset(self) -> None:
        """Forget what is in flight (after a reconnect): everything pending goes out again."""
        with self._lock:
            self._inflight.clear()
            self._attempts.clear()
            self._cursor = 0
        self._wake.set()

    def inflight(self) -> dict[int, float]:
        """seq -> the monotonic time at which it is re-sent unless acknowledged first."""
        with self._lock:
            return dict(self._inflight)

    def handle_ack(self, ack: Ack) -> int:
        """Delete exactly the acknowledged seqs; returns how many records were removed."""
        last = self._outbox.last_seq()
        seqs = [
            seq for first, end in ack.ranges for seq in range(max(first, 1), min(end, last) + 1)
        ]
        try:
            removed = self._outbox.delete(seqs)
        except sqlite3.Error as exc:
            log.error("could not delete acknowledged records from the outbox: %s", exc)
            return 0
        with self._lock:
            for seq in seqs:
                self._inflight.pop(seq, None)
                self._attempts.pop(seq, None)
        log.debug("server acknowledged %d records (%d removed)", len(seqs), removed)
        self._wake.set()
        return removed

    def tick(self) -> int:
        """Send what is due: expired in-flight records first, then new ones. Returns the count."""
        if not self._connected():
            return 0
        now = time.monotonic()
        with self._lock:
            expired = sorted(seq for seq, due in self._inflight.items() if now >= due)
        sent = 0
        if expired:
            records = self._outbox.get(expired)
            present = {record.seq for record in records}
            with self._lock:
                for seq in expired:
                    if seq not in present:
                        self._inflight.pop(seq, None)
                        self._attempts.pop(seq, None)
                waited = max((self._wait(seq) for seq in present), default=0.0)
            if records:
                log.info(
                    "re-sending %d records not acknowledged after %.1fs",
                    len(records),
                    waited,
                )
                sent += self._send(records)
        while True:
            with self._lock:
                room, cursor = self.max_inflight - len(self._inflight), self._cursor
            if room <= 0:
                break
            records = self._outbox.pending(min(self.batch_size, room), after=cursor)
            if not records:
                break
            count = self._send(records)
            sent += count
            if count:
                with self._lock:
                    self._cursor = max(self._cursor, records[count - 1].seq)
            if count < len(records):
                break
        return sent

    def _send(self, records: Sequence[PredictionRecord]) -> int:
        sent = 0
        for start in range(0, len(records), self.batch_size):
            batch = tuple(records[start : start + self.batch_size])
            if not self._publish(PredictionBatch(records=batch)):
                return sent
            now = time.monotonic()
            with self._lock:
                for record in batch:
                    self._attempts[record.seq] = self._attempts.get(record.seq, 0) + 1
                    self._inflight[record.seq] = now + self._wait(record.seq)
            sent += len(batch)
        return sent

    def _wait(self, seq: int) -> float:
        """How long the latest send of ``seq`` waits for its ack (call with the lock held)."""
        doublings = min(self._attempts.get(seq, 1) - 1, 16)
        return float(min(self.ack_timeout * 2**doublings, self.max_ack_timeout))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.tick()
            except sqlite3.Error as exc:
                log.error("outbox read failed: %s", exc)
