"""The durable prediction log: SQLite in WAL mode, group commit, records stored in segments.

Writers hand records to :meth:`Outbox.submit` (or :meth:`Outbox.submit_segments`) and get a
:class:`Ticket`; one writer thread takes everything queued and commits it in *one*
transaction (one fsync), so concurrent requests share the cost of a commit. Each write is
stored as one :class:`~edge_agent.segments.Segment` row holding all of its records, so a
batch request costs one row, not one per record. Two modes:

- ``durable``: :meth:`Outbox.write` waits for the ticket, so a prediction whose response
  was returned is on disk. Under load a commit carries many writes.
- ``fast``: :meth:`Outbox.write` returns at once. The writer wakes at most once per
  ``commit_interval`` and commits everything queued, so what a power cut can lose is bounded
  by that interval plus the commit in progress.

Each :class:`Ticket` carries one raw lock, held until its records are committed: waking a
durable writer costs one futex, where an :class:`threading.Event` shared by a group also made
every woken thread queue for the event's own lock. A submit wakes the writer only when it is
idle, so a busy writer costs the serving path one lock and a list append.

Bounded by ``max_bytes`` of stored segment bodies with an explicit policy: ``drop_oldest``
deletes the oldest segments (delivered or not) to make room, ``reject_new`` refuses the new
ones. A full disk (SQLITE_FULL) is handled by the same policy; nothing is ever raised to the
serving path. :meth:`Outbox.stats` counts the records dropped and why.

Every record has its own ``seq``: a segment of ``count`` records holds ``first`` to
``last``, and ``last`` is the row's ``INTEGER PRIMARY KEY AUTOINCREMENT``, so seqs increase
and are never reused, even after deletes. Records leave otherwise only through
:meth:`Outbox.delete`, which the delivery loop calls with exactly the seqs the fleet server
acknowledged; a segment that loses only some of its records is rewritten with the rest, and
their seqs are then listed as ranges in its ``seqs`` column (NULL while consecutive).
"""

from __future__ import annotations

import bisect
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
from edge_agent.segments import (
    Deferred,
    Segment,
    decode_segment,
    keep_records,
    segment_seqs,
    seq_ranges,
)
from edge_agent.wal import Checkpointer
from edgefleet.codec import decode
from edgefleet.protocol.messages import PredictionRecord

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segment (
    last INTEGER PRIMARY KEY AUTOINCREMENT,
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    size INTEGER NOT NULL,
    format INTEGER NOT NULL,
    body BLOB NOT NULL,
    seqs TEXT
)
"""
_COLUMNS = 6
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
    """One submitted write; ``wait`` returns its records' seqs ([] when not stored).

    ``_pending`` is a lock taken at creation and released by the writer once the records
    are committed (or dropped); a waiter acquires and releases it again, so any number of
    threads may wait on one ticket."""

    __slots__ = ("_pending", "count", "done", "first", "parts", "segments", "size", "stored")

    def __init__(self, parts: list[Segment | Deferred]) -> None:
        self.parts = parts
        self.count = sum(part.count for part in parts)
        self.segments: list[Segment] = []
        """The parts encoded, by the writer thread (:meth:`encode`)."""
        self.size = 0
        self.first = 0
        """The seq of the first record once stored; the records' seqs are consecutive."""
        self.stored = False
        self.done = False
        """True once the writer is through with the ticket (committed or dropped)."""
        self._pending = threading.Lock()
        self._pending.acquire()

    @property
    def seqs(self) -> list[int]:
        return list(range(self.first, self.first + self.count)) if self.stored else []

    def encode(self) -> None:
        """Encode the deferred parts (in the writer thread) and size what will be stored."""
        self.segments = [
            part if isinstance(part, Segment) else part.encode() for part in self.parts
        ]
        self.size = sum(len(segment.body) for segment in self.segments)

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
            _migrate_row_table(self._db)
            (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM segment").fetchone()
            self._next = _last_seq(self._db) + 1
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
            self._reader = self._connect()
            self._checkpointer = Checkpointer(path)
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
        self._checkpoint_due = False
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
        rows = [
            json.dumps({k: v for k, v in r.items() if k != "seq"} if "seq" in r else r)
            for r in records
        ]
        return self.submit_segments([Segment.of_lines(rows)] if rows else [])

    def submit_segments(self, segments: Sequence[Segment | Deferred]) -> Ticket:
        """Like :meth:`submit`, for records encoded as segments (or to be encoded by the
        writer thread): each is stored as one row, and the ticket's records get consecutive
        seqs in segment order."""
        ticket = Ticket([segment for segment in segments if segment.count])
        with self._lock:
            while self._queued >= self.config.max_queue and not self._closing:
                self._cond.wait(0.1)  # back-pressure: the writer is far behind
            if self._closing:
                raise AgentError(f"{self.path}: the outbox is closed")
            self._queue.append(ticket)
            self._last = ticket
            self._queued += ticket.count
            if self._idle:
                self._idle = False
                self._cond.notify_all()
        return ticket

    def write(self, records: Sequence[Mapping[str, Any]]) -> Ticket:
        """Submit; in durable mode, return only once the records are committed (or dropped)."""
        return self._settle(self.submit(records))

    def write_segments(self, segments: Sequence[Segment | Deferred]) -> Ticket:
        """:meth:`write` for records already encoded (see :meth:`submit_segments`)."""
        return self._settle(self.submit_segments(segments))

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
            if self._checkpoint_due:  # after waking the requests: none of them waits for it
                with self._write_lock:
                    self._checkpointer.run_now(self._db)
                self._checkpoint_due = False

    def _commit(self, batch: list[Ticket]) -> None:
        batch, failed = self._encode(batch)
        with self._write_lock:
            self._stats.rejected_new += failed
            try:
                self._insert(batch)
            except sqlite3.Error as exc:
                self._rollback()
                if not _is_full(exc):
                    log.error("outbox commit failed, %d records lost: %s", _count(batch), exc)
                    self._stats.rejected_new += _count(batch)
                    return
                self._on_disk_full(batch)

    def _encode(self, batch: list[Ticket]) -> tuple[list[Ticket], int]:
        """Encode the tickets' deferred segments; returns the tickets that could be and the
        count of records of those that could not (never stored: a bug, logged)."""
        encoded: list[Ticket] = []
        failed = 0
        for ticket in batch:
            try:
                ticket.encode()
            except Exception:
                log.exception("outbox: %d records could not be encoded, not stored", ticket.count)
                failed += ticket.count
                continue
            encoded.append(ticket)
        return encoded, failed

    def _insert(self, batch: list[Ticket]) -> None:
        """Store the tickets in one transaction; seqs are taken only once it committed.

        When they fit the byte bound and one INSERT statement, that statement is the whole
        transaction (SQLite's autocommit): sqlite3 lets go of the GIL around every call, and
        with many writers running, getting it back after a BEGIN and a COMMIT as well cost
        more than the fsync."""
        limit = self.config.max_bytes
        size = sum(ticket.size for ticket in batch)
        single = (
            self._bytes + size <= limit
            and sum(len(ticket.segments) for ticket in batch) <= _ROWS_PER_INSERT
        )
        if not single:
            self._db.execute("BEGIN IMMEDIATE")
        freed = 0
        if self._bytes + size > limit:
            if self.config.policy is OverflowPolicy.DROP_OLDEST:
                freed = self._drop_oldest(self._bytes + size - limit)
            else:
                batch = self._reject(batch, limit - self._bytes)
                size = sum(ticket.size for ticket in batch)
        rows: list[tuple[int, int, int, int, int, bytes]] = []
        seq = self._next
        for ticket in batch:
            for segment in ticket.segments:
                last = seq + segment.count - 1
                rows.append(
                    (last, seq, segment.count, len(segment.body), segment.format, segment.body)
                )
                seq = last + 1
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            self._db.execute(_insert_sql(len(chunk)), [v for row in chunk for v in row])
        if not single:
            self._db.execute("COMMIT")
        self._checkpoint_due = self._checkpointer.wrote(size)
        self._bytes += size - freed
        self._stats.commits += 1
        first = self._next
        self._next = seq
        self._stats.committed += seq - first
        for ticket in batch:
            ticket.first = first
            ticket.stored = True
            first += ticket.count

    def _drop_oldest(self, need: int) -> int:
        """Delete the oldest segments until ``need`` bytes are free; returns bytes freed."""
        freed = dropped = 0
        cutoff = 0
        cursor = self._db.execute("SELECT last, size, count FROM segment ORDER BY last")
        for last, size, count in cursor:
            freed += int(size)
            dropped += int(count)
            cutoff = int(last)
            if freed >= need:
                break
        cursor.close()
        if dropped:
            self._db.execute("DELETE FROM segment WHERE last <= ?", (cutoff,))
            self._stats.dropped_oldest += dropped
            log.warning("outbox full: dropped the %d oldest records (drop_oldest)", dropped)
        return freed

    def _reject(self, batch: list[Ticket], room: int) -> list[Ticket]:
        kept: list[Ticket] = []
        rejected = 0
        for ticket in batch:
            if ticket.size <= room:
                kept.append(ticket)
                room -= ticket.size
            else:
                rejected += ticket.count
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
        (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM segment").fetchone()
        self._bytes = int(total)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            self._db.execute("ROLLBACK")

    # -- reading and acknowledging ---------------------------------------------------------

    def pending(self, limit: int, *, after: int = 0) -> list[PredictionRecord]:
        """The oldest ``limit`` records with seq > ``after``, in seq order."""
        found: list[PredictionRecord] = []
        with self._read_lock:
            cursor = self._reader.execute(
                "SELECT first, count, seqs, format, body FROM segment WHERE last > ? ORDER BY last",
                (after,),
            )
            for row in cursor:
                found.extend(record for record in _records(row) if record.seq > after)
                if len(found) >= limit:
                    break
            cursor.close()
        return found[:limit]

    def get(self, seqs: Iterable[int]) -> list[PredictionRecord]:
        """The records among ``seqs`` that are still in the outbox, in seq order."""
        wanted = set(seqs)
        if not wanted:
            return []
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT first, count, seqs, format, body FROM segment "
                "WHERE last >= ? AND first <= ? ORDER BY last",
                (min(wanted), max(wanted)),
            ).fetchall()
        return [record for row in rows for record in _records(row) if record.seq in wanted]

    def delete(self, seqs: Iterable[int]) -> int:
        """Delete exactly these seqs (absent ones are ignored); returns how many were removed."""
        wanted = set(seqs)
        ordered = sorted(wanted)
        if not ordered:
            return 0
        removed = freed = 0
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in self._db.execute(
                    "SELECT last, first, count, size, format, seqs FROM segment "
                    "WHERE last >= ? AND first <= ? ORDER BY last",
                    (ordered[0], ordered[-1]),
                ).fetchall():
                    gone, size_freed = self._delete_from(row, wanted, ordered)
                    removed += gone
                    freed += size_freed
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._bytes -= freed
        return removed

    def _delete_from(
        self, row: tuple[int, int, int, int, int, str | None], wanted: set[int], ordered: list[int]
    ) -> tuple[int, int]:
        """Delete ``wanted`` seqs from one segment; returns (records removed, bytes freed)."""
        last, first, count, size, format_, ranges = row
        if ranges is None:  # consecutive seqs: count the wanted ones in its range
            hits = bisect.bisect_right(ordered, last) - bisect.bisect_left(ordered, first)
            if hits == count:
                self._db.execute("DELETE FROM segment WHERE last = ?", (last,))
                return count, size
            if not hits:
                return 0, 0
        seqs = segment_seqs(first, count, ranges)
        kept = [index for index, seq in enumerate(seqs) if seq not in wanted]
        if len(kept) == count:
            return 0, 0
        if not kept:
            self._db.execute("DELETE FROM segment WHERE last = ?", (last,))
            return count, size
        [(body,)] = self._db.execute(
            "DELETE FROM segment WHERE last = ? RETURNING body", (last,)
        ).fetchall()
        rest = keep_records(format_, body, kept)
        rest_seqs = seq_ranges([seqs[index] for index in kept])
        self._db.execute(
            "INSERT INTO segment (last, first, count, size, format, body, seqs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seqs[kept[-1]], seqs[kept[0]], len(kept), len(rest), format_, rest, rest_seqs),
        )
        return count - len(kept), size - len(rest)

    def depth(self) -> int:
        with self._read_lock:
            (count,) = self._reader.execute(
                "SELECT COALESCE(SUM(count), 0) FROM segment"
            ).fetchone()
        return int(count)

    @property
    def bytes(self) -> int:
        """Stored segment bytes (what ``max_bytes`` bounds)."""
        return self._bytes

    def stats(self) -> OutboxStats:
        with self._write_lock:
            return OutboxStats(**vars(self._stats))

    def last_seq(self) -> int:
        """The highest seq ever assigned (0 when none), deleted or not."""
        with self._read_lock:
            return _last_seq(self._reader)

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the connections."""
        with self._lock:
            self._closing = True
            self._cond.notify_all()
        self._writer.join(timeout=30)
        self._checkpointer.close()
        with self._write_lock, self._read_lock:
            self._db.close()
            self._reader.close()


@functools.cache
def _insert_sql(count: int) -> str:
    """The INSERT of ``count`` segments (at most ``_ROWS_PER_INSERT`` texts, so at most that
    many statements in sqlite3's statement cache). One statement per chunk, not one per row
    as ``executemany`` runs: sqlite3 lets go of the GIL around every statement step, and with
    many writer threads waiting for it, getting it back costs more than the insert itself."""
    marks = "(" + ", ".join("?" * _COLUMNS) + ")"
    return "INSERT INTO segment (last, first, count, size, format, body) VALUES " + ", ".join(
        [marks] * count
    )


def _last_seq(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'segment'").fetchone()
    return int(row[0]) if row else 0


def _migrate_row_table(db: sqlite3.Connection) -> None:
    """An outbox written by an older agent keeps one record per row in table ``outbox``:
    move its records into one-record segments, keeping their seqs (and the highest seq ever
    used), in one transaction."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
    ).fetchone()
    if not exists:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT INTO segment (last, first, count, size, format, body) "
            "SELECT seq, seq, 1, length(CAST(record AS BLOB)), 0, CAST(record AS BLOB) "
            "FROM outbox ORDER BY seq"
        )
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        if row and int(row[0]) > _last_seq(db):
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'segment'")
            db.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('segment', ?)", (int(row[0]),)
            )
        db.execute("DROP TABLE outbox")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _count(batch: list[Ticket]) -> int:
    return sum(ticket.count for ticket in batch)


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc) or "disk I/O" in str(exc)


def _records(row: tuple[int, int, str | None, int, bytes]) -> list[PredictionRecord]:
    """The records of a ``(first, count, seqs, format, body)`` segment row."""
    first, count, ranges, format_, body = row
    seqs = segment_seqs(first, count, ranges)
    fields = decode_segment(format_, body)
    return [
        decode(PredictionRecord, {**record, "seq": seq})
        for seq, record in zip(seqs, fields, strict=True)
    ]
