"""Operator tokens and their roles (viewer, operator, admin)."""
