"""Write a device's activity columns (``last_seen``, ``last_telemetry``) at most every few
seconds: most of what ingest writes to a device row is only these two, once per telemetry
message, and each such ``UPDATE`` rewrites the whole row (on PostgreSQL a new row version and
its JSON). Nothing reads them to decide anything (the rollout gates read the telemetry table,
online/offline comes from the Last Will), so they may lag by up to ``interval_s``.

:meth:`ActivityBuffer.split` decides, per batch, which device rows are written now: a row with
any other change (reported version, deployment phase, online) is written at once, with what was
held back for it; a row whose activity was written less than ``interval_s`` ago is held back;
rows held back longer are written with the next batch (the MQTT bridge sends an empty batch
when it is idle, so a quiet fleet is flushed too). Nothing changes in memory until the caller
reports the transaction committed (:meth:`ActivityBuffer.committed`): a batch that is rolled
back and retried is split again from the same state. Telemetry rows themselves are never held:
they are appended with every batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACTIVITY_COLUMNS = frozenset({"last_seen", "last_telemetry"})
DEFAULT_INTERVAL_S = 5.0

Changes = dict[str, dict[str, Any]]  # device id -> column -> value


@dataclass(frozen=True)
class ActivitySplit:
    """What one batch wrote and held back, to be recorded once its transaction commits."""

    at: float
    written: tuple[str, ...] = ()  # devices whose activity columns this batch writes
    held: Changes = field(default_factory=dict)  # activity values left for a later batch


class ActivityBuffer:
    """Activity columns held back per device; one per ingest worker (not thread-safe)."""

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._written_at: dict[str, float] = {}
        self._held: Changes = {}

    @property
    def held_devices(self) -> int:
        return len(self._held)

    def has_due(self) -> bool:
        """Whether some held values are due (the worker flushes them when idle)."""
        now = self._clock()
        return any(not self._recent(device_id, now) for device_id in self._held)

    def split(self, changes: Changes) -> tuple[Changes, ActivitySplit]:
        """The device rows to write now (held values merged under newer ones), and the split."""
        now = self._clock()
        write: Changes = {}
        held: Changes = {}
        for device_id, values in changes.items():
            only_activity = values.keys() <= ACTIVITY_COLUMNS
            if only_activity and self._recent(device_id, now):
                held[device_id] = values
            else:
                write[device_id] = {**self._held.get(device_id, {}), **values}
        for device_id, values in self._held.items():
            if device_id not in changes and not self._recent(device_id, now):
                write[device_id] = values
        written = tuple(d for d, values in write.items() if values.keys() & ACTIVITY_COLUMNS)
        return write, ActivitySplit(now, written, held)

    def committed(self, split: ActivitySplit) -> None:
        for device_id in split.written:
            self._written_at[device_id] = split.at
            self._held.pop(device_id, None)
        for device_id, values in split.held.items():
            self._held.setdefault(device_id, {}).update(values)

    def _recent(self, device_id: str, now: float) -> bool:
        written_at = self._written_at.get(device_id)
        return written_at is not None and now - written_at < self.interval_s
