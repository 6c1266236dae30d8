"""The agent's persisted state (``data_dir/state.json``): written atomically, read at start.

``active`` is the model served after a restart. ``deployment`` is the update in progress (or
the last one): its desired state, the update state it was in (persisted *before* that state
runs), how often each state was entered (the crash-loop counter), the model served before it
(``previous``, for rollback) and the staged bundle (``candidate``). ``failed`` remembers
deployments that failed or were rolled back, with that outcome and its detail, so a retained
desired state does not make the agent try them again, and is answered with the very report
the deployment ended with (a server that stores a terminal report once sees it once).

Stores written before the outcome was kept map a deployment to its detail alone, prefixed
``rolled back: `` when it was rolled back; :meth:`StateStore.load` reads those as well.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.update.states import State
from edgefleet.codec import Record, decode, to_json
from edgefleet.protocol.messages import DesiredState

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MAX_FAILED = 50
LEGACY_ROLLED_BACK = "rolled back: "  # how older stores marked a rolled-back deployment


def write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that after a crash or power cut it holds either the
    old or the new content, never a torn mix: write a temporary file, fsync it, rename it over
    ``path``, fsync the directory (which makes the rename itself durable)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, kw_only=True)
class ActiveModel(Record):
    deployment_id: str
    model: str
    version: str
    sha256: str
    path: str


@dataclass(frozen=True, kw_only=True)
class Outcome(Record):
    """How a deployment that is not tried again ended (failed or rolled back), and the detail
    it was reported with."""

    state: State
    detail: str = ""


@dataclass(kw_only=True)
class Deployment(Record):
    desired: DesiredState
    state: State = State.IDLE
    detail: str = ""
    entries: dict[str, int] = field(default_factory=dict)
    previous: ActiveModel | None = None
    candidate: ActiveModel | None = None

    @property
    def deployment_id(self) -> str:
        return self.desired.deployment_id


@dataclass(kw_only=True)
class AgentState(Record):
    active: ActiveModel | None = None
    deployment: Deployment | None = None
    failed: dict[str, Outcome] = field(default_factory=dict)

    def remember_failure(
        self, deployment_id: str, detail: str, *, state: State = State.FAILED
    ) -> None:
        self.failed[deployment_id] = Outcome(state=state, detail=detail)
        while len(self.failed) > MAX_FAILED:
            del self.failed[next(iter(self.failed))]


class StateStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE

    def load(self) -> AgentState:
        if not self.path.exists():
            return AgentState()
        try:
            return decode(AgentState, _upgrade(json.loads(self.path.read_bytes())))
        except (ValueError, OSError) as exc:  # DecodeError and invalid JSON are ValueErrors
            broken = self.path.with_suffix(".json.corrupt")
            log.error("%s is unreadable (%s); kept as %s, starting empty", self.path, exc, broken)
            self.path.replace(broken)
            return AgentState()

    def save(self, state: AgentState) -> None:
        """Written durably (:func:`write_durably`): a crash leaves the old or the new state."""
        write_durably(self.path, to_json(state, indent=2).encode())


def _upgrade(data: Any) -> Any:
    """``data`` with entries of ``failed`` that an older store wrote (the detail alone) as
    outcomes: ``rolled back: why`` was a rollback because of ``why``, anything else a failure."""
    failed = data.get("failed") if isinstance(data, dict) else None
    if not isinstance(failed, dict) or not any(isinstance(v, str) for v in failed.values()):
        return data
    outcomes: dict[Any, Any] = {}
    for deployment_id, entry in failed.items():
        if isinstance(entry, str) and entry.startswith(LEGACY_ROLLED_BACK):
            entry = {"state": State.ROLLED_BACK.value, "detail": entry[len(LEGACY_ROLLED_BACK) :]}
        elif isinstance(entry, str):
            entry = {"state": State.FAILED.value, "detail": entry}
        outcomes[deployment_id] = entry
    return {**data, "failed": outcomes}
