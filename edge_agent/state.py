"""The agent's persisted state (``data_dir/state.json``): written atomically, read at start.

A restart reads ``active`` and serves that model at once; ``failed`` remembers deployments
that failed for good so a retained desired state does not make the agent try them again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgefleet.protocol.messages import DeploymentPhase

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MAX_FAILED = 50


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ActiveModel(_Model):
    deployment_id: str
    model: str
    version: str
    sha256: str
    path: str


class Deployment(_Model):
    deployment_id: str
    model: str
    version: str
    phase: DeploymentPhase
    detail: str = ""


class AgentState(_Model):
    active: ActiveModel | None = None
    deployment: Deployment | None = None
    failed: dict[str, str] = Field(default_factory=dict)

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
            return AgentState.model_validate_json(self.path.read_bytes())
        except (ValidationError, OSError) as exc:
            broken = self.path.with_suffix(".json.corrupt")
            log.error("%s is unreadable (%s); kept as %s, starting empty", self.path, exc, broken)
            self.path.replace(broken)
            return AgentState()

    def save(self, state: AgentState) -> None:
        """Write to a temporary file, fsync it, rename over state.json, fsync the directory."""
        tmp = self.path.with_suffix(".json.tmp")
        with tmp.open("wb") as handle:
            handle.write(state.model_dump_json(indent=2).encode())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
