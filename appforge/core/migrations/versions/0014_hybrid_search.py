"""hybrid search: a keyword index of every chunk beside its vectors

``datasource_chunks`` holds each chunk's text and metadata. On SQLite an FTS5
table indexes its text (external content, kept in step by triggers); on
PostgreSQL a generated ``tsvector`` column with a GIN index does. Rows go with
their entry and datasource (``ON DELETE CASCADE``; on SQLite the delete trigger
also clears the FTS5 index).

``datasources.search_mode`` is the mode a search uses when it names none:
datasources made before keep ``vector`` (their chunks have no keyword rows
until their entries are processed again); new ones default to ``hybrid``.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_SQLITE_FTS = (
    "CREATE VIRTUAL TABLE datasource_chunks_fts USING fts5("
    "text, content='datasource_chunks', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER datasource_chunks_fts_insert AFTER INSERT ON datasource_chunks BEGIN "
    "INSERT INTO datasource_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER datasource_chunks_fts_delete AFTER DELETE ON datasource_chunks BEGIN "
    "INSERT INTO datasource_chunks_fts(datasource_chunks_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER datasource_chunks_fts_update AFTER UPDATE ON datasource_chunks BEGIN "
    "INSERT INTO datasource_chunks_fts(datasource_chunks_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO datasource_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
)
_POSTGRES_FTS = (
    "ALTER TABLE datasource_chunks ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX ix_datasource_chunks_tsv ON datasource_chunks USING GIN (tsv)",
)


def upgrade() -> None:
    with op.batch_alter_table("datasources", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("search_mode", sa.String(length=16), nullable=False, server_default="vector")
        )
    op.create_table(
        "datasource_chunks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chunk_id", sa.String(length=64), nullable=False),
        sa.Column("datasource_uuid", sa.String(length=36), nullable=False),
        sa.Column("entry_uuid", sa.String(length=36), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("chunk_metadata", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["datasource_uuid"],
            ["datasources.uuid"],
            name=op.f("fk_datasource_chunks_datasource_uuid_datasources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["entry_uuid"],
            ["datasource_entries.uuid"],
            name=op.f("fk_datasource_chunks_entry_uuid_datasource_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasource_chunks")),
        sa.UniqueConstraint("chunk_id", name=op.f("uq_datasource_chunks_chunk_id")),
    )
    op.create_index(
        op.f("ix_datasource_chunks_datasource_uuid"), "datasource_chunks", ["datasource_uuid"]
    )
    op.create_index(op.f("ix_datasource_chunks_entry_uuid"), "datasource_chunks", ["entry_uuid"])
    statements = _SQLITE_FTS if op.get_bind().dialect.name == "sqlite" else _POSTGRES_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS datasource_chunks_fts_{name}")
        op.execute("DROP TABLE IF EXISTS datasource_chunks_fts")
    op.drop_index(op.f("ix_datasource_chunks_entry_uuid"), table_name="datasource_chunks")
    op.drop_index(op.f("ix_datasource_chunks_datasource_uuid"), table_name="datasource_chunks")
    op.drop_table("datasource_chunks")
    with op.batch_alter_table("datasources", schema=None) as batch_op:
        batch_op.drop_column("search_mode")
