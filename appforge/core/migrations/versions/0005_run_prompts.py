"""run_prompts: which managed prompt version each run's llm step used

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_prompts",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("prompt_id", sa.String(length=36), nullable=False),
        sa.Column("prompt_version", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_prompts_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "step_id", name=op.f("pk_run_prompts")),
    )
    with op.batch_alter_table("run_prompts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_prompts_prompt_id"), ["prompt_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_prompts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_prompts_prompt_id"))
    op.drop_table("run_prompts")
