"""Only one executor ticks at a time (PostgreSQL advisory lock), and a tick locks only the
device rows it changes."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from edgefleet.protocol.messages import Ack, DesiredState
from fleet_server.cohorts.tables import CohortRow
from fleet_server.db import create_db_engine, create_schema, session_factory
from fleet_server.devices.tables import DeviceRow
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


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_tick_does_not_wait_for_device_rows_it_does_not_change(database_url: str) -> None:
    """Ingest holds a device row's lock while it writes a batch: a tick whose reconcile pass
    finds that device already on its cohort's version neither locks nor waits for it."""
    engine = create_db_engine(database_url)
    try:
        create_schema(engine)
        with Session(engine) as session:
            session.add(
                CohortRow(
                    name="site-a",
                    selector={"site": "a"},
                    current_model="m",
                    current_version="1.0.0",
                    current_set_at=1.0,
                    created_at=0.0,
                )
            )
            session.add(
                DeviceRow(
                    device_id="d1",
                    profile="x86-64/avx512-vnni",
                    labels={"site": "a"},
                    token_sha256="d1" * 32,
                    registered_at=0.0,
                    desired_model="m",
                    desired_version="1.0.0",
                )
            )
            session.commit()
        executor = Executor(engine=engine, sessions=session_factory(engine), publisher=Recorder())
        with Session(engine) as ingest:
            ingest.scalars(
                select(DeviceRow).where(DeviceRow.device_id == "d1").with_for_update(key_share=True)
            ).all()
            ticked = threading.Thread(target=executor.tick, daemon=True)
            ticked.start()
            ticked.join(10)
            waited = ticked.is_alive()
            ingest.commit()
        ticked.join(10)
        assert not waited, "the tick waited for a device row it does not change"
        assert executor.ticks == 1
    finally:
        engine.dispose()
