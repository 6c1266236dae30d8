"""Alembic migrations of the fleet server's database, applied at startup (``upgrade head``).

Add a revision after changing a table::

    .venv/bin/python -m fleet_server.migrations revision "what changed"

which autogenerates it against a scratch SQLite database upgraded to the current head.
"""
