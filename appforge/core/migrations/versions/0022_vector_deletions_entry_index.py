"""vector deletions by entry: an index on ``vector_deletions.entry_uuid``

A worker replaces an entry's notes each time it writes the entry's vectors
(``DatasourceStore.note_writing``): found by the entry, not by scanning every
note, which a long vector-store outage can make many.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_vector_deletions_entry_uuid"), "vector_deletions", ["entry_uuid"])


def downgrade() -> None:
    op.drop_index("ix_vector_deletions_entry_uuid", table_name="vector_deletions")
