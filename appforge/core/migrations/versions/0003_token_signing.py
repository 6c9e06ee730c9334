"""request signing: tokens that require an HMAC signature, used signatures

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import appforge.core.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("require_signature", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("signing_secret", sa.String(length=100), nullable=True))
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.alter_column("require_signature", server_default=None)
    op.create_table(
        "used_signatures",
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("expires_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signature", name=op.f("pk_used_signatures")),
    )
    with op.batch_alter_table("used_signatures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_used_signatures_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("used_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_signatures_expires_at"))
    op.drop_table("used_signatures")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("signing_secret")
        batch_op.drop_column("require_signature")
