"""entry stage: what an entry being ingested is doing now

``datasource_entries.stage`` is set while an entry is ``processing``
(``loading model``, ``extracting``, ``embedding n/m``, ``indexing``) and cleared
when it is ready or failed, so nobody watches a silent ``processing``.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasource_entries") as batch:
        batch.add_column(sa.Column("stage", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasource_entries") as batch:
        batch.drop_column("stage")
