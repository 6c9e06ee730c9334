"""datasources: datasources and their entries (the ingestion queue)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 08:47:50
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import appforge.core.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasources",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=True),
        sa.Column("chunk_overlap", sa.Integer(), nullable=True),
        sa.Column("created_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_datasources")),
        sa.UniqueConstraint("name", name=op.f("uq_datasources_name")),
    )
    op.create_table(
        "datasource_entries",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("datasource_uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("file_path", sa.Text(), nullable=True),
        sa.Column("media_type", sa.String(length=200), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_metadata", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("chunks_total", sa.Integer(), nullable=True),
        sa.Column("chunks_done", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("lease_until", appforge.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["datasource_uuid"],
            ["datasources.uuid"],
            name=op.f("fk_datasource_entries_datasource_uuid_datasources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_datasource_entries")),
        sa.UniqueConstraint(
            "datasource_uuid",
            "content_hash",
            name=op.f("uq_datasource_entries_datasource_uuid_content_hash"),
        ),
    )
    op.create_index(
        op.f("ix_datasource_entries_datasource_uuid"), "datasource_entries", ["datasource_uuid"]
    )
    # The ingestion queue's claim: the oldest pending entry.
    op.create_index(
        "ix_datasource_entries_status_created_at", "datasource_entries", ["status", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_datasource_entries_status_created_at", table_name="datasource_entries")
    op.drop_index(op.f("ix_datasource_entries_datasource_uuid"), table_name="datasource_entries")

    op.drop_table("datasource_entries")
    op.drop_table("datasources")
