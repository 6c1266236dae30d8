"""Only one executor ticks at a time: PostgreSQL advisory lock."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from edgefleet.protocol.messages import Ack, DesiredState
from fleet_server.db import create_db_engine, create_schema, session_factory
from fleet_server.rollouts.executor import Executor, lock_key

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self) -> None:
        self.desired: list[tuple[str, DesiredState]] = []

    def publish_desired(self, device_id: str, desired: DesiredState) -> None:
        self.desired.append((device_id, desired))

    def publish_ack(self, device_id: str, ack: Ack) -> None:
        raise AssertionError("the executor never acknowledges")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_second_executor_skips_its_tick_while_one_holds_the_lock(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        create_schema(engine)
        executor = Executor(engine=engine, sessions=session_factory(engine), publisher=Recorder())
        assert executor.tick() is True
        with engine.connect() as other:
            key = lock_key(str(other.scalar(text("SELECT current_schema()"))))
            assert other.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            assert executor.tick() is False
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        assert executor.tick() is True
        assert executor.ticks == 2
    finally:
        engine.dispose()
