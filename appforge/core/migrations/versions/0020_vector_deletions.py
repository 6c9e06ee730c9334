"""vector deletions: vectors of deleted entries and datasources removed for sure

``vector_deletions`` names the vectors still to remove from the vector store:
an entry's (``entry_uuid``) or a whole datasource's (``entry_uuid`` NULL). A
row is written in the transaction that deletes the entry or datasource, and
removed once the vector store has removed the vectors; a deletion the store
missed (it went away at that moment) is done again by the refresh job's rounds.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appforge.core.db import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vector_deletions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("datasource_uuid", sa.String(length=36), nullable=False),
        sa.Column("entry_uuid", sa.String(length=36), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vector_deletions")),
    )
    op.create_index(
        op.f("ix_vector_deletions_datasource_uuid"), "vector_deletions", ["datasource_uuid"]
    )


def downgrade() -> None:
    op.drop_index("ix_vector_deletions_datasource_uuid", table_name="vector_deletions")
    op.drop_table("vector_deletions")
