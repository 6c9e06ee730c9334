"""Tables of the providers layer: OpenAI-compatible servers and model aliases managed
through the API (``/api/providers``, ``/api/models/aliases``), and the version counter
that tells every process when they changed.

Secrets are stored encrypted with the server key (``fernet:...``, see
``appforge/core/keys.py``): a provider's API key, and its extra headers as one
encrypted JSON object (a header may carry a key too). Neither is ever returned.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appforge.core.db import Base, UTCDateTime, utcnow


class StoredProvider(Base):
    """An OpenAI-compatible server added in the browser or through the API."""

    __tablename__ = "llm_providers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_url: Mapped[str] = mapped_column(Text)
    api_key: Mapped[str | None] = mapped_column(Text, nullable=True)  # "fernet:..."
    headers: Mapped[str | None] = mapped_column(Text, nullable=True)  # "fernet:..." of JSON
    # The model names offered for this server (empty: ask the server's /models).
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredAlias(Base):
    """A model alias pointing at ``<provider>:<model>``."""

    __tablename__ = "model_aliases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(300))
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CatalogVersion(Base):
    """One row: raised by every change of the two tables above, in the same transaction,
    so a process notices a change with one small query instead of re-reading them."""

    __tablename__ = "model_catalog"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer, default=0)
