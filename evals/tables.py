"""Tables of evaluations: datasets and their cases, evaluations and their case results.

``evaluation_cases`` is a lease queue (``appforge.core.queue``): one row per case
of an evaluation, copied from the dataset when the evaluation starts (so the
evaluation keeps the revision it ran on), claimed by a worker while it runs the
case, and holding the case's result once it is ``done``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from appforge.core.db import Base, UTCDateTime, utcnow


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Raised by every change to the dataset's cases.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DatasetCase(Base):
    __tablename__ = "dataset_cases"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    n: Mapped[int] = mapped_column(Integer)  # its place in the dataset (cases keep their order)
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    expected: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Evaluation(Base):
    """A batch run of an app over a dataset's cases at one revision."""

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Not foreign keys: an evaluation outlives its dataset (it copied the cases), and
    # one whose app is deleted ends ``failed``.
    dataset_id: Mapped[str] = mapped_column(String(36), index=True)
    dataset_name: Mapped[str] = mapped_column(String(200))
    dataset_revision: Mapped[int] = mapped_column(Integer)
    app_uuid: Mapped[str] = mapped_column(String(36), index=True)
    app_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON)
    scorers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    output_keys: Mapped[list[str]] = mapped_column(JSON)  # the app's, in its order
    concurrency: Mapped[int] = mapped_column(Integer)
    # queued, running, done, failed, cancelled
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    token_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    token_role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EvaluationCase(Base):
    """One case of an evaluation: queued, claimed while it runs, then its result."""

    __tablename__ = "evaluation_cases"
    __table_args__ = (UniqueConstraint("evaluation_id", "case_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[str] = mapped_column(
        ForeignKey("evaluations.id", ondelete="CASCADE"), index=True
    )
    case_id: Mapped[str] = mapped_column(String(36))
    n: Mapped[int] = mapped_column(Integer)
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    expected: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    # pending, running (claimed), done, cancelled
    status: Mapped[str] = mapped_column(String(16), index=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The API process (``processes.id``) running it: a dead one's cases are taken over.
    process_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    scores: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(nullable=True)
    tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EvaluationPolicy(Base):
    """The requirement a gated promote, deploy or restore of a prompt or app uses when
    it gives none (``subject``: ``prompt`` or ``app``).

    ``prompt_id`` or ``app_uuid`` (the one of the subject, equal to ``subject_id``) is a
    foreign key with ``ON DELETE CASCADE``, like every other child row of a prompt or
    app: however the prompt or app goes (delete, bulk delete, its use case deleted), its
    policy goes with it in the same transaction, and a new one of the same name starts
    without a policy."""

    __tablename__ = "evaluation_policies"
    __table_args__ = (
        CheckConstraint(
            "(subject = 'prompt' AND prompt_id = subject_id AND app_uuid IS NULL)"
            " OR (subject = 'app' AND app_uuid = subject_id AND prompt_id IS NULL)",
            name="subject_key",
        ),
    )

    subject: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    prompt_id: Mapped[str | None] = mapped_column(
        ForeignKey("prompts.id", ondelete="CASCADE"), index=True, nullable=True
    )
    app_uuid: Mapped[str | None] = mapped_column(
        ForeignKey("apps.uuid", ondelete="CASCADE"), index=True, nullable=True
    )
    require: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
