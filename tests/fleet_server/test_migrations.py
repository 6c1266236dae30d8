"""Alembic: ``upgrade head`` on an empty database gives exactly the schema of the models."""

from __future__ import annotations

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fleet_server.db import Base, create_db_engine, create_schema, import_tables

pytestmark = pytest.mark.integration


def test_upgrade_head_matches_the_models(database_url: str) -> None:
    import_tables()
    engine = create_db_engine(database_url)
    try:
        create_schema(engine)
        create_schema(engine)  # idempotent: already at head
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            tables = set(sqlalchemy.inspect(connection).get_table_names())
            version = connection.scalar(sqlalchemy.text("SELECT version_num FROM alembic_version"))
        assert {"rollouts", "rollout_waves", "device_deployments", "cohorts"} <= tables
        assert version is not None
    finally:
        engine.dispose()
