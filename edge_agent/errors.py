"""Errors of the edge agent. Every one names what is wrong."""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class AgentError(EdgefleetError):
    """The agent cannot start or run as configured (missing keys, bad URL, unreadable state)."""


class InputError(EdgefleetError):
    """A prediction request the model cannot take: wrong shape, dtype, NaN, bad JSON."""

    http_status = 400


class RuntimeBackendError(EdgefleetError):
    """A model could not be loaded or run by the runtime backend."""

    http_status = 500


class UpdateError(EdgefleetError):
    """A deployment step failed; the message names the file or step at fault."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
