"""``edgefleet demo`` (stub)."""

from __future__ import annotations


def demo_command() -> None:
    """Run the end-to-end demo."""
