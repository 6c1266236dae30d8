"""The one exception base of Edgefleet.

Every package raises subclasses of :class:`EdgefleetError` for conditions a user can act on.
The CLI turns them into one clean line and exit code 1; the fleet server turns them into an
HTTP status. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgefleetError(Exception):
    """A problem the user can fix: the message names what is wrong."""

    http_status: int = 400


class MissingDependencyError(EdgefleetError):
    """An optional dependency needed for this command is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this needs the Python package {module!r}, which is not installed: "
            f"pip install 'edgefleet[{extra}]'"
        )
        self.module = module
        self.extra = extra
