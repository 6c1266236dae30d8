"""A terminal deployment report is stored once, however often the agent sends it.

The agent re-publishes a failed or rolled-back outcome until the broker acknowledges it, and
answers every desired state the server republishes with it (``edge_agent.update.reports``);
the history in ``deployment_reports`` must still show it once. On SQLite and PostgreSQL,
through ``apply_batch`` as ingest runs it, and through the migration for reports stored
before.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from alembic import command
from sqlalchemy import Engine, Float, String, Text, column, insert, select, table
from sqlalchemy.orm import Session

from edgefleet.protocol.messages import DeploymentPhase as Phase
from edgefleet.protocol.messages import Report
from fleet_server.db import alembic_config, create_db_engine, create_schema, session_factory
from fleet_server.devices.tables import DeviceRow
from fleet_server.ingest.service import Incoming, apply_batch, outcome_key
from fleet_server.ingest.tables import ReportRow

pytestmark = pytest.mark.integration

GOLDEN = "golden.npz: outputs differ from the expected ones"
REPORTS_0001 = table(  # deployment_reports as migration 0001 created it
    "deployment_reports",
    *(column(name, String()) for name in ("device_id", "deployment_id", "model", "version")),
    column("phase", String()),
    column("detail", Text()),
    column("ts", Float()),
    column("received_at", Float()),
)


def _device(device_id: str) -> DeviceRow:
    return DeviceRow(
        device_id=device_id,
        profile="x86-64/avx512-vnni",
        labels={},
        token_sha256=device_id * 32,
        registered_at=0.0,
    )


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    create_schema(engine)
    with Session(engine) as session:
        session.add_all([_device("d1"), _device("d2")])
        session.commit()
    yield engine
    engine.dispose()


def report(phase: Phase, detail: str = "", deployment_id: str = "dep-2") -> Report:
    """A new report each time, as the agent builds one for every send (a new ``ts``)."""
    return Report(
        deployment_id=deployment_id,
        model="m",
        version="2.0.0",
        phase=phase,
        detail=detail,
        active_model="m",
        active_version="1.0.0",
    )


def ingest(engine: Engine, *items: tuple[str, Report, float]) -> None:
    with session_factory(engine)() as session:
        apply_batch(session, [Incoming(device, message, at) for device, message, at in items])
        session.commit()


def history(engine: Engine, device_id: str) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        rows = session.execute(
            select(ReportRow.deployment_id, ReportRow.phase, ReportRow.detail)
            .where(ReportRow.device_id == device_id)
            .order_by(ReportRow.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_terminal_report_sent_again_is_stored_once(engine: Engine) -> None:
    ingest(
        engine,
        ("d1", report(Phase.DOWNLOADING), 1.0),
        ("d1", report(Phase.STAGING), 2.0),
        ("d1", report(Phase.FAILED, GOLDEN), 3.0),
    )
    # After an outage: published again on reconnect, and again as the answer to the desired
    # state the restarted server republished; twice in one batch, once more in the next.
    ingest(
        engine,
        ("d1", report(Phase.FAILED, GOLDEN), 10.0),
        ("d1", report(Phase.FAILED, GOLDEN), 11.0),
    )
    ingest(engine, ("d1", report(Phase.FAILED, GOLDEN), 20.0))
    assert history(engine, "d1") == [
        ("dep-2", "downloading", ""),
        ("dep-2", "staging", ""),
        ("dep-2", "failed", GOLDEN),
    ]
    with Session(engine) as session:
        device = session.get(DeviceRow, "d1")
        assert device is not None
        assert (device.deployment_phase, device.deployment_detail) == ("failed", GOLDEN)
        assert device.last_seen == 20.0  # a repeat still says the device is alive


def test_only_the_same_terminal_report_is_a_repeat(engine: Engine) -> None:
    """Progress may really happen again (a retry downloads again); a failure with another
    detail is another failure; the same outcome from another device is that device's."""
    retry = "HTTP 503 (retrying in {}s)"
    ingest(
        engine,
        ("d1", report(Phase.DOWNLOADING), 1.0),
        ("d1", report(Phase.FAILED, retry.format(1)), 2.0),
        ("d1", report(Phase.DOWNLOADING), 3.0),
        ("d1", report(Phase.FAILED, retry.format(2)), 4.0),
        ("d2", report(Phase.ROLLED_BACK, "agent restarted"), 5.0),
        ("d2", report(Phase.FAILED, "agent restarted"), 6.0),
        ("d2", report(Phase.ROLLED_BACK, "agent restarted", "dep-3"), 7.0),
        ("d2", report(Phase.COMMITTED, deployment_id="dep-4"), 8.0),
    )
    ingest(
        engine,
        ("d1", report(Phase.ROLLED_BACK, "agent restarted"), 10.0),
        ("d2", report(Phase.COMMITTED, deployment_id="dep-4"), 11.0),
        ("d2", report(Phase.ROLLED_BACK, "agent restarted"), 12.0),
    )
    assert history(engine, "d1") == [
        ("dep-2", "downloading", ""),
        ("dep-2", "failed", retry.format(1)),
        ("dep-2", "downloading", ""),
        ("dep-2", "failed", retry.format(2)),
        ("dep-2", "rolled_back", "agent restarted"),
    ]
    assert history(engine, "d2") == [
        ("dep-2", "rolled_back", "agent restarted"),
        ("dep-2", "failed", "agent restarted"),
        ("dep-3", "rolled_back", "agent restarted"),
        ("dep-4", "committed", ""),
    ]


def test_concurrent_ingests_of_the_same_terminal_report_store_it_once(engine: Engine) -> None:
    """Two ingest transactions with the same failure, the second running while the first has
    not committed: one row, and the second does not fail."""
    first = session_factory(engine)()
    apply_batch(first, [Incoming("d1", report(Phase.FAILED, GOLDEN), 1.0)])
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(ingest, engine, ("d1", report(Phase.FAILED, GOLDEN), 2.0))
        try:
            with pytest.raises(FutureTimeout):
                second.result(0.5)  # waits for the first transaction
        finally:
            first.commit()
            first.close()
        second.result(30)  # raises here if the second ingest failed
    assert history(engine, "d1") == [("dep-2", "failed", GOLDEN)]


def test_the_migration_keeps_the_first_of_repeated_terminal_reports(database_url: str) -> None:
    """Reports stored before the server deduplicated them: the migration keeps the first of
    each terminal report, every progress report, and keys what it keeps as ingest does."""
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0001")
            connection.execute(
                insert(DeviceRow.__table__).values(  # type: ignore[arg-type]
                    device_id="d1",
                    profile="p",
                    labels={},
                    token_sha256="0" * 64,
                    registered_at=0.0,
                    online=False,
                    predictions_received=0,
                )
            )
            sent = [
                report(Phase.DOWNLOADING),
                report(Phase.FAILED, GOLDEN),
                report(Phase.DOWNLOADING),
                report(Phase.FAILED, GOLDEN),
                report(Phase.FAILED, GOLDEN),
                report(Phase.FAILED, "another"),
            ]
            connection.execute(
                insert(REPORTS_0001),
                [
                    {
                        "device_id": "d1",
                        "deployment_id": message.deployment_id,
                        "model": message.model,
                        "version": message.version,
                        "phase": message.phase.value,
                        "detail": message.detail,
                        "ts": message.ts,
                        "received_at": float(at),
                    }
                    for at, message in enumerate(sent)
                ],
            )
        create_schema(engine)
        with Session(engine) as session:
            rows = session.execute(
                select(
                    ReportRow.phase, ReportRow.detail, ReportRow.received_at, ReportRow.outcome_key
                ).order_by(ReportRow.id)
            ).all()
        assert [tuple(row) for row in rows] == [
            ("downloading", "", 0.0, None),
            ("failed", GOLDEN, 1.0, outcome_key(sent[1])),
            ("downloading", "", 2.0, None),
            ("failed", "another", 5.0, outcome_key(sent[5])),
        ]
        ingest(engine, ("d1", report(Phase.FAILED, GOLDEN), 9.0))  # still a repeat
        assert len(history(engine, "d1")) == 4
    finally:
        engine.dispose()
