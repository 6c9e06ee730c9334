"""builder sessions: a browser signed in to the builder (an http-only cookie)

A row stands for the token that signed in; the builder gets a one-time claim,
the browser trades it for the session secret, held only by its cookie. Both are
stored as keyed hashes (see api.builder_sessions).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appforge.core.db import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builder_sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("claim_hash", sa.String(length=64), nullable=True),
        sa.Column("claim_expires_at", UTCDateTime(), nullable=True),
        sa.Column("session_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["tokens.id"],
            name=op.f("fk_builder_sessions_token_id_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builder_sessions")),
        sa.UniqueConstraint("claim_hash", name=op.f("uq_builder_sessions_claim_hash")),
        sa.UniqueConstraint("session_hash", name=op.f("uq_builder_sessions_session_hash")),
    )
    with op.batch_alter_table("builder_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_builder_sessions_token_id"), ["token_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_builder_sessions_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("builder_sessions")
