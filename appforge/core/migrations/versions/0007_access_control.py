"""access control: token roles and scopes, session and run owners, the audit log

Tokens get a role (admin, editor, viewer, runner) instead of is_admin: admin
tokens stay admin, every other token becomes an editor, which is what a
non-admin token could do before. Tokens may be narrowed to apps and browser
origins, expire, and carry their own rate limit. Sessions record who made them
and runs which token ran them. The audit log records who changed what.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appforge.core.db import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="editor")
        )
        batch_op.add_column(sa.Column("apps", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("origins", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("rate_limit", sa.String(length=32), nullable=True))
    tokens = sa.table("tokens", sa.column("role", sa.String), sa.column("is_admin", sa.Boolean))
    op.execute(tokens.update().where(tokens.c.is_admin == sa.true()).values(role="admin"))
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.alter_column("role", server_default=None)
        batch_op.drop_column("is_admin")

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_runs_token_id"), ["token_id"], unique=False)
        # Admission counts the running runs of one app on every run.
        batch_op.create_index(
            batch_op.f("ix_runs_app_uuid_status"), ["app_uuid", "status"], unique=False
        )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor_id", sa.String(length=36), nullable=True),
        sa.Column("actor_name", sa.String(length=200), nullable=True),
        sa.Column("actor_address", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_actor_id"), ["actor_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_target_id"), ["target_id"], unique=False)


def downgrade() -> None:
    op.drop_table("audit_events")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_app_uuid_status"))
        batch_op.drop_index(batch_op.f("ix_runs_token_id"))
        batch_op.drop_column("token_id")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("owner")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    tokens = sa.table("tokens", sa.column("role", sa.String), sa.column("is_admin", sa.Boolean))
    op.execute(tokens.update().where(tokens.c.role == "admin").values(is_admin=True))
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.alter_column("is_admin", server_default=None)
        batch_op.drop_column("rate_limit")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("origins")
        batch_op.drop_column("apps")
        batch_op.drop_column("role")
