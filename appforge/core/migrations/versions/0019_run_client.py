"""run client: the runs a caller without a token has going are counted in the database

``runs`` gains ``client``: for a run asked for without a token, a keyed hash of
the caller's address (never the address itself), and an index on ``client`` and
``status``. Admission counts that caller's runs going over every app and every
API process (``runs.max_active_per_client``); before, each process counted only
its own, so N processes let one address have N times the limit going.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("client", sa.String(length=64), nullable=True))
        batch.create_index("ix_runs_client_status", ["client", "status"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_client_status")
        batch.drop_column("client")
