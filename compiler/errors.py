"""The compiler's user-facing errors."""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class CompileError(EdgefleetError):
    """A compile cannot go on: the message names the file, model or profile at fault."""
