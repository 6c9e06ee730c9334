"""prompts: use cases, prompts, versions, labels, deployments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 08:43:04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import appforge.core.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "use_cases",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_use_cases")),
        sa.UniqueConstraint("name", name=op.f("uq_use_cases_name")),
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("use_case_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["use_case_id"],
            ["use_cases.id"],
            name=op.f("fk_prompts_use_case_id_use_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompts")),
        sa.UniqueConstraint("use_case_id", "name", name=op.f("uq_prompts_use_case_id_name")),
    )
    with op.batch_alter_table("prompts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prompts_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_prompts_use_case_id"), ["use_case_id"], unique=False)

    op.create_table(
        "prompt_deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("prompt_id", sa.String(length=36), nullable=False),
        sa.Column("label", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=True),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_prompt_deployments_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_deployments")),
    )
    with op.batch_alter_table("prompt_deployments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prompt_deployments_prompt_id"), ["prompt_id"], unique=False
        )

    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("prompt_id", sa.String(length=36), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("template_text", sa.Text(), nullable=True),
        sa.Column("template_messages", sa.JSON(), nullable=True),
        sa.Column("model_defaults", sa.JSON(), nullable=False),
        sa.Column("variables_schema", sa.JSON(), nullable=True),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("commit_message", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_prompt_versions_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_versions")),
        sa.UniqueConstraint(
            "prompt_id", "version_number", name=op.f("uq_prompt_versions_prompt_id_version_number")
        ),
    )
    with op.batch_alter_table("prompt_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prompt_versions_prompt_id"), ["prompt_id"], unique=False
        )

    op.create_table(
        "prompt_labels",
        sa.Column("prompt_id", sa.String(length=36), nullable=False),
        sa.Column("label", sa.String(length=36), nullable=False),
        sa.Column("version_id", sa.String(length=36), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", appforge.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_prompt_labels_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["prompt_versions.id"],
            name=op.f("fk_prompt_labels_version_id_prompt_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("prompt_id", "label", name=op.f("pk_prompt_labels")),
    )
    with op.batch_alter_table("prompt_labels", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prompt_labels_version_id"), ["version_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("prompt_labels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_labels_version_id"))

    op.drop_table("prompt_labels")
    with op.batch_alter_table("prompt_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_versions_prompt_id"))

    op.drop_table("prompt_versions")
    with op.batch_alter_table("prompt_deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_deployments_prompt_id"))

    op.drop_table("prompt_deployments")
    with op.batch_alter_table("prompts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompts_use_case_id"))
        batch_op.drop_index(batch_op.f("ix_prompts_name"))

    op.drop_table("prompts")
    op.drop_table("use_cases")
