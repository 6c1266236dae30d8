"""Checkpoints of the outbox's write-ahead log, off the commit path.

By default SQLite checkpoints inside the commit that fills the WAL past 1,000 pages: that
commit then also copies the WAL into the database and fsyncs it, and every durable request
waiting on it waits 10-20 ms instead of one fsync (a tenth of the outbox's commit time under
load). The outbox turns that off (``wal_autocheckpoint=0``) and tells :meth:`Checkpointer.wrote`
what each commit wrote:

- once ``every_bytes`` were written, this thread runs a PASSIVE checkpoint on its own
  connection, which never blocks the writer and copies most of the WAL into the database;
- a checkpoint that runs while commits go on never catches up with the end of the WAL, and
  SQLite starts the WAL over only when one has, so once ``max_bytes`` were written the
  writer thread checkpoints itself, between commits and after waking the requests it
  committed (:meth:`Checkpointer.run_now`): with nothing appended meanwhile it completes,
  and the next commit starts the WAL over. The WAL file stays within about ``max_bytes``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        path: Path,
        *,
        every_bytes: int = 2 << 20,
        max_bytes: int = 8 << 20,
        interval: float = 1.0,
    ) -> None:
        self.every_bytes = every_bytes
        self.max_bytes = max_bytes
        self.interval = interval
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._written = 0
        self._since_complete = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="edgefleet-wal", daemon=True)
        self._thread.start()

    def wrote(self, size: int) -> bool:
        """A commit wrote about ``size`` bytes to the WAL (called by the writer only).
        Returns whether the writer should now :meth:`run_now`."""
        self._written += size
        self._since_complete += size
        if self._written >= self.every_bytes:
            self._written = 0
            self._wake.set()
        return self._since_complete >= self.max_bytes

    def run_now(self, db: sqlite3.Connection) -> None:
        """Checkpoint on the writer's connection ``db``, between its commits. Should this
        one not complete (the background one held the checkpoint, or a reader the end of
        the WAL), the writer tries again after its next commit."""
        try:
            busy, frames, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("outbox WAL checkpoint failed: %s", exc)
            return
        if not busy and frames == done:
            self._since_complete = 0

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop:
                break
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # a full disk: the next one may succeed
                log.warning("outbox WAL checkpoint failed: %s", exc)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._db.close()
