"""evaluation policies: a stored ``require`` per prompt or app; history names evaluations

``evaluation_policies`` holds, per prompt or app (``subject`` is ``prompt`` or
``app``), the requirement a gated promote, deploy or restore uses when it gives
none. ``prompt_deployments.evaluation_id`` and ``app_versions.evaluation_id``
name the evaluation a gated move passed.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from appforge.core.db import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluation_policies",
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("require", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "subject_id", name=op.f("pk_evaluation_policies")),
    )
    for table in ("prompt_deployments", "app_versions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("evaluation_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    for table in ("app_versions", "prompt_deployments"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("evaluation_id")
    op.drop_table("evaluation_policies")
