"""terminal deployment reports stored once

Agents re-send a terminal report (committed, rolled back, failed) until the broker
acknowledges it, and answer every republished desired state with it: ``outcome_key`` (a
sha256 of deployment, phase and detail; None for progress reports) with a unique index on
``(device_id, outcome_key)`` lets ingest store it once. Reports stored already get their key,
and repeats of one (all but the first) are deleted before the index is built.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:12:00.000000
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TERMINAL = ("committed", "rolled_back", "failed")
_CHUNK = 500

reports = sa.table(
    "deployment_reports",
    sa.column("id", sa.Integer()),
    sa.column("device_id", sa.String()),
    sa.column("deployment_id", sa.String()),
    sa.column("phase", sa.String()),
    sa.column("detail", sa.Text()),
    sa.column("outcome_key", sa.String()),
)


def _outcome_key(deployment_id: str, phase: str, detail: str) -> str:
    """As ``fleet_server.ingest.service.outcome_key`` computed it when this was written."""
    return hashlib.sha256(json.dumps([deployment_id, phase, detail]).encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("deployment_reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome_key", sa.String(length=64), nullable=True))

    connection = op.get_bind()
    terminal = connection.execute(
        sa.select(
            reports.c.id,
            reports.c.device_id,
            reports.c.deployment_id,
            reports.c.phase,
            reports.c.detail,
        )
        .where(reports.c.phase.in_(TERMINAL))
        .order_by(reports.c.id)
    ).all()
    seen: set[tuple[str, str]] = set()
    keys: list[dict[str, object]] = []
    repeats: list[int] = []
    for row_id, device_id, deployment_id, phase, detail in terminal:
        key = _outcome_key(deployment_id, phase, detail)
        if (device_id, key) in seen:
            repeats.append(row_id)
        else:
            seen.add((device_id, key))
            keys.append({"row_id": row_id, "key": key})
    if keys:
        connection.execute(
            reports.update()
            .where(reports.c.id == sa.bindparam("row_id"))
            .values(outcome_key=sa.bindparam("key")),
            keys,
        )
    for start in range(0, len(repeats), _CHUNK):
        chunk = repeats[start : start + _CHUNK]
        connection.execute(reports.delete().where(reports.c.id.in_(chunk)))

    with op.batch_alter_table("deployment_reports", schema=None) as batch_op:
        batch_op.create_index("uq_report_device_outcome", ["device_id", "outcome_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("deployment_reports", schema=None) as batch_op:
        batch_op.drop_index("uq_report_device_outcome")
        batch_op.drop_column("outcome_key")
