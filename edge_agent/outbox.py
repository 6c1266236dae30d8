"""The durable prediction log: SQLite in WAL mode, one row per prediction, group commit.

Writers hand records to :meth:`Outbox.submit` and get a :class:`Ticket`; one writer thread
takes everything queued and commits it in *one* transaction (one fsync), so concurrent
requests share the cost of a commit. Two modes:

- ``durable``: :meth:`Outbox.write` waits for the ticket, so a prediction whose response
  was returned is on disk. Under load a commit carries many records.
- ``fast``: :meth:`Outbox.write` returns at once. The writer wakes at most once per
  ``commit_interval`` and commits everything queued, so what a power cut can lose is bounded
  by that interval plus the commit in progress.

Each :class:`Ticket` carries one raw lock, held until its records are committed: waking a
durable writer costs one futex, where an :class:`threading.Event` shared by a group also made
every woken thread queue for the event's own lock. A submit wakes the writer only when it is
idle, so a busy writer costs the serving path one lock and a list append.

Bounded by ``max_bytes`` of record payload with an explicit policy: ``drop_oldest`` deletes
the oldest records (delivered or not) to make room, ``reject_new`` refuses the new ones.
A full disk (SQLITE_FULL) is handled by the same policy; nothing is ever raised to the
serving path. :meth:`Outbox.stats` counts what was dropped and why.

Records leave otherwise only through :meth:`Outbox.delete`, which the delivery loop calls with
exactly the sequence numbers the fleet server acknowledged. ``seq`` comes from
``INTEGER PRIMARY KEY AUTOINCREMENT``: increasing, never reused, even after deletes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edge_agent.errors import AgentError
from edgefleet.codec import decode
from edgefleet.protocol.messages import PredictionRecord

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0
)
"""
_CHUNK = 500
_ROWS_PER_INSERT = 64


class OutboxMode(StrEnum):
    DURABLE = "durable"
    FAST = "fast"


class OverflowPolicy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    REJECT_NEW = "reject_new"


@dataclass(frozen=True)
class OutboxConfig:
    mode: OutboxMode = OutboxMode.DURABLE
    max_bytes: int = 256 << 20
    policy: OverflowPolicy = OverflowPolicy.DROP_OLDEST
    max_queue: int = 100_000
    synchronous: str = "FULL"
    commit_interval: float = 0.01
    """Fast mode: seconds the writer lets records gather before a commit (the loss window)."""
    max_db_pages: int | None = None
    """A hard cap on the database file (SQLite ``max_page_count``); reaching it is handled
    exactly like a full disk."""


@dataclass
class OutboxStats:
    """Cumulative since the outbox was opened."""

    committed: int = 0
    commits: int = 0
    dropped_oldest: int = 0
    rejected_new: int = 0
    disk_full: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_oldest + self.rejected_new


class Ticket:
    """One submitted group of records; ``wait`` returns their seqs ([] when not stored).

    ``_pending`` is a lock taken at creation and released by the writer once the records
    are committed (or dropped); a waiter acquires and releases it again, so any number of
    threads may wait on one ticket."""

    __slots__ = ("_pending", "done", "first", "rows", "stored")

    def __init__(self, rows: list[str]) -> None:
        self.rows = rows
        self.first = 0
        """The seq of the first row once stored; the rows' seqs are consecutive."""
        self.stored = False
        self.done = False
        """True once the writer is through with the ticket (committed or dropped)."""
        self._pending = threading.Lock()
        self._pending.acquire()

    @property
    def seqs(self) -> list[int]:
        return list(range(self.first, self.first + len(self.rows))) if self.stored else []

    def wait(self, timeout: float | None = None) -> list[int]:
        if not self.done:
            if not self._pending.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError("the outbox writer did not commit in time")
            self._pending.release()
        return self.seqs

    def finish(self) -> None:
        """The writer is through with the ticket: wake its waiters."""
        self.done = True
        self._pending.release()


class Outbox:
    """Thread-safe. One writer thread and connection; readers use their own connection."""

    def __init__(self, path: Path, config: OutboxConfig | None = None) -> None:
        self.path = path
        self.config = config or OutboxConfig()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            if "size" not in columns:  # an outbox written by an older agent
                self._db.execute("ALTER TABLE outbox ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
            (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
            self._reader = self._connect()
        except sqlite3.Error as exc:
            raise AgentError(f"{path}: cannot open the prediction outbox ({exc})") from exc
        self._bytes = int(total)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: list[Ticket] = []
        self._last: Ticket | None = None
        self._queued = 0
        self._idle = False
        self._closing = False
        self._stats = OutboxStats()
        self._writer = threading.Thread(target=self._run, name="edgefleet-outbox", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA busy_timeout=5000")
        db.execute(f"PRAGMA synchronous={self.config.synchronous}")
        if self.config.max_db_pages is not None:
            db.execute(f"PRAGMA max_page_count={int(self.config.max_db_pages)}")
        return db

    # -- writing ---------------------------------------------------------------------------

    def submit(self, records: Sequence[Mapping[str, Any]]) -> Ticket:
        """Queue records for the next group commit (every PredictionRecord field but seq)."""
        return self.submit_rows(
            [
                json.dumps({k: v for k, v in r.items() if k != "seq"} if "seq" in r else r)
                for r in records
            ]
        )

    def submit_rows(self, rows: list[str]) -> Ticket:
        """Like :meth:`submit`, for records already encoded as JSON objects (without seq)."""
        ticket = Ticket(rows)
        with self._lock:
            while self._queued >= self.config.max_queue and not self._closing:
                self._cond.wait(0.1)  # back-pressure: the writer is far behind
            if self._closing:
                raise AgentError(f"{self.path}: the outbox is closed")
            self._queue.append(ticket)
            self._last = ticket
            self._queued += len(rows)
            if self._idle:
                self._idle = False
                self._cond.notify_all()
        return ticket

    def write(self, records: Sequence[Mapping[str, Any]]) -> Ticket:
        """Submit; in durable mode, return only once the records are committed (or dropped)."""
        return self._settle(self.submit(records))

    def write_rows(self, rows: list[str]) -> Ticket:
        """:meth:`write` for records already encoded as JSON (see :meth:`submit_rows`)."""
        return self._settle(self.submit_rows(rows))

    def _settle(self, ticket: Ticket) -> Ticket:
        if self.config.mode is OutboxMode.DURABLE:
            ticket.wait()
        return ticket

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """Store records and wait for the commit, whatever the mode; returns their seqs."""
        return self.submit(records).wait()

    def append(self, record: Mapping[str, Any]) -> int:
        seqs = self.append_many([record])
        return seqs[0] if seqs else 0

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is committed (or dropped)."""
        last = self._last  # batches commit in submission order
        if last is None:
            return True
        try:
            last.wait(timeout)
        except TimeoutError:
            return False
        return True

    def _run(self) -> None:
        fast = self.config.mode is OutboxMode.FAST
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                if not self._queue:
                    return
                if fast and not self._closing:  # let a commit interval's records gather
                    self._cond.wait(self.config.commit_interval)
                batch, self._queue, self._queued = self._queue, [], 0
                self._cond.notify_all()
            try:
                self._commit(batch)
            finally:
                for ticket in batch:
                    ticket.finish()

    def _commit(self, batch: list[Ticket]) -> None:
        with self._write_lock:
            try:
                self._insert(batch)
            except sqlite3.Error as exc:
                self._rollback()
                if not _is_full(exc):
                    log.error("outbox commit failed, %d records lost: %s", _count(batch), exc)
                    self._stats.rejected_new += _count(batch)
                    return
                self._on_disk_full(batch)

    def _insert(self, batch: list[Ticket]) -> None:
        limit = self.config.max_bytes
        rows = [(row, len(row)) for ticket in batch for row in ticket.rows]
        size = sum(row[1] for row in rows)
        self._db.execute("BEGIN IMMEDIATE")
        freed = 0
        if self._bytes + size > limit:
            if self.config.policy is OverflowPolicy.DROP_OLDEST:
                freed = self._drop_oldest(self._bytes + size - limit)
            else:
                batch = self._reject(batch, limit - self._bytes)
                rows = [(row, len(row)) for ticket in batch for row in ticket.rows]
                size = sum(row[1] for row in rows)
        if rows:
            last = self._insert_rows(rows)
        self._db.execute("COMMIT")
        self._bytes += size - freed
        self._stats.commits += 1
        self._stats.committed += len(rows)
        if rows:
            first = int(last) - len(rows) + 1
            for ticket in batch:
                ticket.first = first
                ticket.stored = True
                first += len(ticket.rows)

    def _insert_rows(self, rows: list[tuple[str, int]]) -> int:
        """INSERT ``rows`` with multi-row statements of up to ``_ROWS_PER_INSERT``; returns
        the last seq. One statement per chunk, not one per row as ``executemany`` runs:
        sqlite3 lets go of the GIL around every statement step, and with many writer
        threads waiting for it, getting it back costs more than the insert itself."""
        cursor: sqlite3.Cursor | None = None
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            cursor = self._db.execute(_insert_sql(len(chunk)), [v for row in chunk for v in row])
        assert cursor is not None and cursor.lastrowid is not None
        return cursor.lastrowid

    def _drop_oldest(self, need: int) -> int:
        """Delete the oldest records until ``need`` bytes are free; returns bytes freed."""
        freed = dropped = 0
        cutoff = 0
        cursor = self._db.execute("SELECT seq, size FROM outbox ORDER BY seq")
        for seq, size in cursor:
            freed += int(size)
            dropped += 1
            cutoff = int(seq)
            if freed >= need:
                break
        cursor.close()
        if dropped:
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (cutoff,))
            self._stats.dropped_oldest += dropped
            log.warning("outbox full: dropped the %d oldest records (drop_oldest)", dropped)
        return freed

    def _reject(self, batch: list[Ticket], room: int) -> list[Ticket]:
        kept: list[Ticket] = []
        rejected = 0
        for ticket in batch:
            size = sum(len(row) for row in ticket.rows)
            if size <= room:
                kept.append(ticket)
                room -= size
            else:
                rejected += len(ticket.rows)
        if rejected:
            self._stats.rejected_new += rejected
            log.warning("outbox full: rejected %d new records (reject_new)", rejected)
        return kept

    def _on_disk_full(self, batch: list[Ticket]) -> None:
        """SQLITE_FULL: make room by the policy and try once more, else drop the batch."""
        count = _count(batch)
        self._stats.disk_full += 1
        if self.config.policy is OverflowPolicy.DROP_OLDEST:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._drop_oldest(max(self._bytes // 4, 1))
                self._db.execute("COMMIT")
                self._recount()
                self._insert(batch)
                return
            except sqlite3.Error as exc:
                self._rollback()
                log.error("outbox: disk full even after dropping old records (%s)", exc)
        self._stats.rejected_new += count
        log.warning("outbox: disk full, %d new records not stored", count)

    def _recount(self) -> None:
        (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._bytes = int(total)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            self._db.execute("ROLLBACK")

    # -- reading and acknowledging ---------------------------------------------------------

    def pending(self, limit: int, *, after: int = 0) -> list[PredictionRecord]:
        """The oldest ``limit`` records with seq > ``after``, in seq order."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT seq, record FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [_record(seq, text) for seq, text in rows]

    def get(self, seqs: Iterable[int]) -> list[PredictionRecord]:
        """The records among ``seqs`` that are still in the outbox, in seq order."""
        wanted = sorted(set(seqs))
        found: list[PredictionRecord] = []
        with self._read_lock:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._reader.execute(
                    f"SELECT seq, record FROM outbox WHERE seq IN ({marks}) ORDER BY seq", chunk
                ).fetchall()
                found.extend(_record(seq, text) for seq, text in rows)
        return found

    def delete(self, seqs: Iterable[int]) -> int:
        """Delete exactly these seqs (absent ones are ignored); returns how many were removed."""
        wanted = sorted(set(seqs))
        removed = freed = 0
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    sizes = self._db.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING size", chunk
                    ).fetchall()
                    removed += len(sizes)
                    freed += sum(int(size) for (size,) in sizes)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._bytes -= freed
        return removed

    def depth(self) -> int:
        with self._read_lock:
            (count,) = self._reader.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    @property
    def bytes(self) -> int:
        """Record payload bytes stored (what ``max_bytes`` bounds)."""
        return self._bytes

    def stats(self) -> OutboxStats:
        with self._write_lock:
            return OutboxStats(**vars(self._stats))

    def last_seq(self) -> int:
        """The highest seq ever assigned (0 when none), deleted or not."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the connections."""
        with self._lock:
            self._closing = True
            self._cond.notify_all()
        self._writer.join(timeout=30)
        with self._write_lock, self._read_lock:
            self._db.close()
            self._reader.close()


@functools.cache
def _insert_sql(count: int) -> str:
    """The INSERT of ``count`` rows (at most ``_ROWS_PER_INSERT`` texts, so at most that
    many statements in sqlite3's statement cache)."""
    return "INSERT INTO outbox (record, size) VALUES " + ", ".join(["(?, ?)"] * count)


def _count(batch: list[Ticket]) -> int:
    return sum(len(ticket.rows) for ticket in batch)


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc) or "disk I/O" in str(exc)


def _record(seq: int, text: str) -> PredictionRecord:
    return decode(PredictionRecord, {**json.loads(text), "seq": seq})
