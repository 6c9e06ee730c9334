"""entry refresh: URL entries fetched again on a schedule, and re-ingestion in place

``datasource_entries`` gains ``refresh`` (none, daily or weekly), when the entry
was last refreshed and is next due (``last_refreshed_at``, ``next_refresh_at``),
the hash of the body its chunks were made from (``body_hash``: an unchanged page
is not embedded again), and ``reingest``: the entry has chunks that stay
searchable while it is processed again (new chunk settings, a changed page).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appforge.core.db import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasource_entries") as batch:
        batch.add_column(
            sa.Column("refresh", sa.String(length=8), nullable=False, server_default="none")
        )
        batch.add_column(sa.Column("last_refreshed_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("next_refresh_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("body_hash", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("reingest", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_datasource_entries_next_refresh_at", ["next_refresh_at"])


def downgrade() -> None:
    with op.batch_alter_table("datasource_entries") as batch:
        batch.drop_index("ix_datasource_entries_next_refresh_at")
        for column in ("reingest", "body_hash", "next_refresh_at", "last_refreshed_at", "refresh"):
            batch.drop_column(column)
