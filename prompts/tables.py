"""Tables of managed prompts.

A label (``production``, ``beta``, ``alpha``, any ``[a-z0-9_.-]{1,36}``) is a
deployment environment: one row per (prompt, label) pointing at one version,
so a label sits on at most one version by construction. ``latest`` is not
stored; it always means the newest version. Every move of a label is kept in
``prompt_deployments`` (who, when, from which version to which, notes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appforge.core.db import Base, UTCDateTime, utcnow


class UseCase(Base):
    __tablename__ = "use_cases"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("use_case_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    use_case_id: Mapped[str] = mapped_column(
        ForeignKey("use_cases.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PromptVersion(Base):
    """One immutable version; ``variants`` hold model-specific templates."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("prompt_id", "version_number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    prompt_id: Mapped[str] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    version_number: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(8))
    template_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    template_messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    model_defaults: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    variables_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    variables: Mapped[list[str]] = mapped_column(JSON, default=list)
    commit_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PromptLabel(Base):
    """Where a label of a prompt points now; the primary key makes it unique per prompt."""

    __tablename__ = "prompt_labels"

    prompt_id: Mapped[str] = mapped_column(
        ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(36), primary_key=True)
    version_id: Mapped[str] = mapped_column(
        ForeignKey("prompt_versions.id", ondelete="CASCADE"), index=True
    )
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PromptDeployment(Base):
    """One move of a label: ``action`` is promote, demote, deploy or rollback."""

    __tablename__ = "prompt_deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prompt_id: Mapped[str] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(16))
    version_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The evaluation a gated move passed (None: the move was not gated).
    evaluation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
