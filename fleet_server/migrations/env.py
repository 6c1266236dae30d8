"""Alembic environment: runs on the connection the server passes in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from fleet_server.db import Base, import_tables

import_tables()
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
