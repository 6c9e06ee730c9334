"""evaluation policies go with their prompt or app: foreign keys with ON DELETE CASCADE

``evaluation_policies`` gains ``prompt_id`` (references ``prompts.id``) and
``app_uuid`` (references ``apps.uuid``), both ``ON DELETE CASCADE``: the one of
the row's subject equals ``subject_id`` (a check constraint holds it), so deleting a
prompt or app, however it is deleted, deletes its policy in the same transaction.
Policies whose prompt or app is already gone are dropped on the way up.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

SUBJECT_KEY = (
    "(subject = 'prompt' AND prompt_id = subject_id AND app_uuid IS NULL)"
    " OR (subject = 'app' AND app_uuid = subject_id AND prompt_id IS NULL)"
)


def upgrade() -> None:
    op.execute(
        "DELETE FROM evaluation_policies WHERE (subject = 'prompt' AND subject_id NOT IN "
        "(SELECT id FROM prompts)) OR (subject = 'app' AND subject_id NOT IN "
        "(SELECT uuid FROM apps)) OR subject NOT IN ('prompt', 'app')"
    )
    with op.batch_alter_table("evaluation_policies") as batch:
        batch.add_column(sa.Column("prompt_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("app_uuid", sa.String(length=36), nullable=True))
    op.execute("UPDATE evaluation_policies SET prompt_id = subject_id WHERE subject = 'prompt'")
    op.execute("UPDATE evaluation_policies SET app_uuid = subject_id WHERE subject = 'app'")
    with op.batch_alter_table("evaluation_policies") as batch:
        batch.create_foreign_key(
            batch.f("fk_evaluation_policies_prompt_id_prompts"),
            "prompts",
            ["prompt_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_foreign_key(
            batch.f("fk_evaluation_policies_app_uuid_apps"),
            "apps",
            ["app_uuid"],
            ["uuid"],
            ondelete="CASCADE",
        )
        batch.create_index(batch.f("ix_evaluation_policies_prompt_id"), ["prompt_id"])
        batch.create_index(batch.f("ix_evaluation_policies_app_uuid"), ["app_uuid"])
        batch.create_check_constraint(batch.f("ck_evaluation_policies_subject_key"), SUBJECT_KEY)


def downgrade() -> None:
    with op.batch_alter_table("evaluation_policies") as batch:
        batch.drop_constraint(batch.f("ck_evaluation_policies_subject_key"), type_="check")
        batch.drop_index(batch.f("ix_evaluation_policies_app_uuid"))
        batch.drop_index(batch.f("ix_evaluation_policies_prompt_id"))
        batch.drop_constraint(batch.f("fk_evaluation_policies_app_uuid_apps"), type_="foreignkey")
        batch.drop_constraint(
            batch.f("fk_evaluation_policies_prompt_id_prompts"), type_="foreignkey"
        )
        batch.drop_column("app_uuid")
        batch.drop_column("prompt_id")
