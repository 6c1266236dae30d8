"""The agent's persisted state (``data_dir/state.json``): written atomically, read at start.

``active`` is the model served after a restart. ``deployment`` is the update in progress (or
the last one): its desired state, the update state it was in (persisted *before* that state
runs), how often each state was entered (the crash-loop counter), the model served before it
(``previous``, for rollback) and the staged bundle (``candidate``). ``failed`` remembers
deployments that failed or were rolled back, so a retained desired state does not make the
agent try them again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.update.states import State
from edgefleet.codec import DecodeError, Record, from_json, to_json
from edgefleet.protocol.messages import DesiredState

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MAX_FAILED = 50


@dataclass(frozen=True, kw_only=True)
class ActiveModel(Record):
    deployment_id: str
    model: str
    version: str
    sha256: str
    path: str


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
    failed: dict[str, str] = field(default_factory=dict)

    def remember_failure(self, deployment_id: str, detail: str) -> None:
        self.failed[deployment_id] = detail
        while len(self.failed) > MAX_FAILED:
            del self.failed[next(iter(self.failed))]


class StateStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE

    def load(self) -> AgentState:
        if not self.path.exists():
            return AgentState()
        try:
            return from_json(AgentState, self.path.read_bytes())
        except (DecodeError, OSError) as exc:
            broken = self.path.with_suffix(".json.corrupt")
            log.error("%s is unreadable (%s); kept as %s, starting empty", self.path, exc, broken)
            self.path.replace(broken)
            return AgentState()

    def save(self, state: AgentState) -> None:
        """Write to a temporary file, fsync it, rename over state.json, fsync the directory."""
        tmp = self.path.with_suffix(".json.tmp")
        with tmp.open("wb") as handle:
            handle.write(to_json(state, indent=2).encode())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
