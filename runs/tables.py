"""Tables of the run service: apps and their versions, sessions and turns, runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appforge.core.db import Base, UTCDateTime, utcnow


class App(Base):
    __tablename__ = "apps"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(16))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    yaml: Mapped[str] = mapped_column(Text)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AppVersion(Base):
    """Every definition an app has had; the newest equals ``App.yaml``."""

    __tablename__ = "app_versions"
    __table_args__ = (UniqueConstraint("app_uuid", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_uuid: Mapped[str] = mapped_column(ForeignKey("apps.uuid", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    yaml: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The evaluation a gated restore passed (None: not gated).
    evaluation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class ChatSession(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    app_uuid: Mapped[str] = mapped_column(ForeignKey("apps.uuid", ondelete="CASCADE"), index=True)
    # Who made it: "token:<id>" or "anonymous" (None: made before owners were kept).
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Turn(Base):
    """One finished exchange in a session; ``transcript`` holds what each llm step saw."""

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("session_id", "n"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    n: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(36))
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    transcript: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_app_uuid_status", "app_uuid", "status"),
        # The run lists (newest first) filtered by app or by status, without a sort.
        Index("ix_runs_app_uuid_created_at", "app_uuid", "created_at"),
        Index("ix_runs_status_created_at", "status", "created_at"),
        # The runs a caller without a token has going (runs.max_active_per_client).
        Index("ix_runs_client_status", "client", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_uuid: Mapped[str] = mapped_column(ForeignKey("apps.uuid", ondelete="CASCADE"), index=True)
    app_version: Mapped[int] = mapped_column(Integer)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    token_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    # The API process executing it (processes.id); None: a run recorded before 0008.
    process_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    # A caller without a token: a keyed hash of its address (ServerKey.hash_client),
    # never the address itself. None: a caller with a token, or a run before 0019.
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(nullable=True)
    ttft_ms: Mapped[float | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RunPrompt(Base):
    """Which managed prompt version (and label) a run's llm step used: for analytics."""

    __tablename__ = "run_prompts"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    prompt_id: Mapped[str] = mapped_column(String(36), index=True)
    prompt_version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(36), nullable=True)


class Process(Base):
    """A live API process: its heartbeat is its lease on the runs it executes.

    A process whose heartbeat is too old, or (on the same machine) whose pid no
    longer names it, is dead; its ``running`` runs are failed ``INTERRUPTED``.
    """

    __tablename__ = "processes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    # What identifies this pid's process on its host (boot id and start time).
    tag: Mapped[str] = mapped_column(String(128), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
