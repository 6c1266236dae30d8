"""Optional heavy dependencies of the compiler, checked once before any work starts."""

from __future__ import annotations

import importlib.util

from edgefleet.errors import MissingDependencyError


def require(*modules: str) -> None:
    """Raise :class:`MissingDependencyError` for the first module that is not installed."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(module, "compiler")
