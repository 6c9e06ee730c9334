"""The providers and aliases stored in the database, as each process sees them.

Admins add OpenAI-compatible servers and point aliases at their models through
the API (``/api/providers``, ``/api/models/aliases``) or the builder. Every
change also raises the one version number in ``model_catalog``, in the same
transaction (:func:`catalog_changed`).

:class:`ModelCatalog` keeps the last catalog it read. A run asks it for the
catalog; it answers from memory while the catalog is younger than
``model_cache_seconds`` and nothing in this process changed it, so the run path
costs no query. After that it reads the version (one small query) and re-reads
the two tables only when the version moved. A change made through this process
calls :meth:`ModelCatalog.invalidate`, so the next run sees it at once; on
PostgreSQL the other API processes are notified and call it too
(``appforge.core.invalidation``), and ``model_cache_seconds`` only bounds how
long a missed notification goes unseen.

Stored keys and headers are decrypted here with the server key, into the
``OpenAISettings`` the registry builds providers from; they never leave the
process otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import SecretStr, ValidationError
from sqlalchemy import Update, select, update
from sqlalchemy.orm import Session, sessionmaker

from appforge.core.errors import AppforgeError
from appforge.core.keys import ServerKey
from appforge.core.settings import OpenAISettings
from providers.tables import CatalogVersion, StoredAlias, StoredProvider

log = logging.getLogger(__name__)


def catalog_changed() -> Update:
    """The statement raising the catalog's version: run it in the transaction of a change."""
    return (
        update(CatalogVersion)
        .where(CatalogVersion.id == 1)
        .values(version=CatalogVersion.version + 1)
    )


@dataclass(frozen=True)
class StoredServer:
    """A server of the catalog: how to reach it, and the model names offered for it."""

    settings: OpenAISettings
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    """The stored providers and aliases at one version."""

    version: int
    servers: Mapping[str, StoredServer] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)


# What a registry without a database sees (``appforge`` library use, unit tests).
EMPTY = Catalog(version=-1)


def server_settings(row: StoredProvider, key: ServerKey) -> OpenAISettings:
    """A stored provider as the settings of its server, its secrets decrypted."""
    api_key = SecretStr(key.decrypt(row.api_key)) if row.api_key else None
    headers = json.loads(key.decrypt(row.headers)) if row.headers else {}
    return OpenAISettings(base_url=row.base_url, api_key=api_key, headers=headers)


class ModelCatalog:
    """The catalog as this process last read it, re-read when its version moves."""

    def __init__(
        self,
        db: sessionmaker[Session],
        key: ServerKey,
        cache_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._key = key
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._catalog = EMPTY
        self._checked: float | None = None  # when the version was last read
        # invalidate() raises _asked; a read that started at _asked == n sets _seen = n.
        self._asked = 0
        self._seen = 0
        self._lock = threading.Lock()

    def _fresh(self) -> bool:
        checked = self._checked
        return (
            checked is not None
            and self._seen == self._asked
            and self._clock() - checked < self._cache_seconds
        )

    def current(self) -> Catalog:
        """The catalog: from memory while fresh, else after checking its version."""
        if self._fresh():
            return self._catalog
        with self._lock:
            if self._fresh():
                return self._catalog
            asked = self._asked
            with self._db() as session:
                # The version first: tables read after it are at least as new.
                version = session.scalar(
                    select(CatalogVersion.version).where(CatalogVersion.id == 1)
                )
                if version is not None and version != self._catalog.version:
                    self._catalog = self._load(session, version)
            self._checked = self._clock()
            self._seen = asked
            return self._catalog

    def invalidate(self) -> None:
        """The catalog changed: the next :meth:`current` reads it again (thread-safe)."""
        self._asked += 1

    def _load(self, session: Session, version: int) -> Catalog:
        servers: dict[str, StoredServer] = {}
        for row in session.scalars(select(StoredProvider)):
            try:
                settings = server_settings(row, self._key)
            except (AppforgeError, ValidationError, ValueError) as exc:
                # One unreadable row must not stop every run: it is left out, loudly.
                log.warning("stored provider %r is left out: %s", row.name, exc)
                continue
            servers[row.name] = StoredServer(settings, tuple(row.models or ()))
        aliases = {row.name: row.target for row in session.scalars(select(StoredAlias))}
        log.info(
            "model catalog version %s: %d providers, %d aliases",
            version,
            len(servers),
            len(aliases),
        )
        return Catalog(version, servers, aliases)
