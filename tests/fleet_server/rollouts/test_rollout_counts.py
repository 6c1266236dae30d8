"""``GET /rollouts/{id}`` counts each device's *latest* deployment in the database (grouped),
on SQLite and PostgreSQL: a device deployed in two waves counts once, by its latest status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from fleet_server.cohorts.tables import CohortRow
from fleet_server.db import create_db_engine, create_schema
from fleet_server.devices.tables import DeviceRow
from fleet_server.rollouts.machine import DeploymentStatus
from fleet_server.rollouts.schemas import RolloutView
from fleet_server.rollouts.service import (
    deployments_of,
    latest_counts,
    latest_deployments,
    waves_of,
)
from fleet_server.rollouts.tables import DeploymentRow, RolloutRow

pytestmark = pytest.mark.integration

# (device, wave, status) of two rollouts; only rollout 1 is counted.
DEPLOYMENTS = [
    ("a", 0, DeploymentStatus.TIMED_OUT),
    ("a", 2, DeploymentStatus.SUCCEEDED),  # came back in a later wave: counts as succeeded
    ("b", 0, DeploymentStatus.SUPERSEDED),
    ("b", 1, DeploymentStatus.FAILED),
    ("c", 1, DeploymentStatus.SUCCEEDED),
    ("d", 1, DeploymentStatus.NO_ARTIFACT),
    ("e", 2, DeploymentStatus.NO_ARTIFACT),
    ("e", 3, DeploymentStatus.SENT),
]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    create_schema(engine)
    with Session(engine) as session:
        session.add(CohortRow(name="all", selector={}, created_at=0.0))
        for device_id in "abcde":
            session.add(
                DeviceRow(
                    device_id=device_id,
                    profile="p",
                    labels={},
                    token_sha256=device_id * 64,
                    registered_at=0.0,
                )
            )
        session.flush()
        for rollout_id in (1, 2):
            session.add(
                RolloutRow(
                    id=rollout_id,
                    cohort="all",
                    model="m",
                    version="2.0.0",
                    strategy={},
                    health={},
                    status="running",
                    created_at=0.0,
                    updated_at=0.0,
                )
            )
        session.flush()
        for device_id, wave, status in DEPLOYMENTS:
            session.add(
                DeploymentRow(rollout_id=1, wave_index=wave, device_id=device_id, status=status)
            )
        session.add(DeploymentRow(rollout_id=2, wave_index=0, device_id="c", status="failed"))
        session.commit()
    yield engine
    engine.dispose()


def test_counts_and_no_artifact_are_of_each_devices_latest_deployment(engine: Engine) -> None:
    with Session(engine) as session:
        assert latest_counts(session, 1) == {
            "succeeded": 2,
            "failed": 1,
            "no_artifact": 1,
            "sent": 1,
        }
        left_out = latest_deployments(session, 1, status=DeploymentStatus.NO_ARTIFACT)
        assert [row.device_id for row in left_out] == ["d"]
        view = RolloutView.of(
            session.get_one(RolloutRow, 1),
            waves_of(session, 1),
            latest_counts(session, 1),
            left_out,
            deployments_of(session, 1),
        )
        assert view.devices is not None and len(view.devices) == len(DEPLOYMENTS)
        assert latest_counts(session, 2) == {"failed": 1}
        assert latest_counts(session, 3) == {}
