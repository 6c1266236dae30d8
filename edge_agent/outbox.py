"""The durable prediction log: SQLite in WAL mode, one row per prediction.

``append`` commits (and syncs) before it returns, so a prediction the API has answered is on
disk. Records leave only through :meth:`Outbox.delete`, which the delivery loop calls with
exactly the sequence numbers the fleet server acknowledged. ``seq`` comes from
``INTEGER PRIMARY KEY AUTOINCREMENT``: increasing, never reused, even after deletes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_agent.errors import AgentError
from edgefleet.protocol.messages import PredictionRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL
)
"""
_DELETE_CHUNK = 500


class Outbox:
    """Thread-safe; one connection guarded by a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise AgentError(f"{path}: cannot open the prediction outbox ({exc})") from exc
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> int:
        """Store one record (every PredictionRecord field but ``seq``); returns its seq."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """Store records in one transaction; returns their seqs in order."""
        rows = [json.dumps({k: v for k, v in r.items() if k != "seq"}) for r in records]
        seqs: list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cursor = self._db.execute("INSERT INTO outbox (record) VALUES (?)", (row,))
                    seqs.append(int(cursor.lastrowid or 0))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seqs

    def pending(self, limit: int, *, after: int = 0) -> list[PredictionRecord]:
        """The oldest ``limit`` records with seq > ``after``, in seq order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, record FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [_record(seq, text) for seq, text in rows]

    def get(self, seqs: Iterable[int]) -> list[PredictionRecord]:
        """The records among ``seqs`` that are still in the outbox, in seq order."""
        wanted = sorted(set(seqs))
        found: list[PredictionRecord] = []
        with self._lock:
            for start in range(0, len(wanted), _DELETE_CHUNK):
                chunk = wanted[start : start + _DELETE_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT seq, record FROM outbox WHERE seq IN ({marks}) ORDER BY seq", chunk
                ).fetchall()
                found.extend(_record(seq, text) for seq, text in rows)
        return found

    def delete(self, seqs: Iterable[int]) -> int:
        """Delete exactly these seqs (absent ones are ignored); returns how many were removed."""
        wanted = sorted(set(seqs))
        removed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(wanted), _DELETE_CHUNK):
                    chunk = wanted[start : start + _DELETE_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    cursor = self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
                    removed += cursor.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def depth(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    def last_seq(self) -> int:
        """The highest seq ever assigned (0 when none), deleted or not."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _record(seq: int, text: str) -> PredictionRecord:
    return PredictionRecord.model_validate({**json.loads(text), "seq": seq})
