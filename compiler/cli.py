"""``edgefleet compile`` (stub)."""

from __future__ import annotations


def compile_command() -> None:
    """Compile a model into signed per-profile bundles."""
