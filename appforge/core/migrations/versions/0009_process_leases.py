"""process leases: each API process's heartbeat, and the process executing each run

A run records the process executing it; a process whose heartbeat stopped (or,
on its own machine, whose pid is gone) is dead, and its ``running`` runs are
failed ``INTERRUPTED`` (see runs.recovery).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appforge.core.db import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "processes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processes")),
    )
    with op.batch_alter_table("processes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_processes_heartbeat_at"), ["heartbeat_at"], unique=False
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("process_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_runs_process_id"), ["process_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_process_id"))
        batch_op.drop_column("process_id")
    op.drop_table("processes")
