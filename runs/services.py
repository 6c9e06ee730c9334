"""The parts a process runs apps with, opened once and named: the typed state.

Every entry point (the API's lifespan, ``appforge run``) opens one
:class:`Services` and hands it to the run service, so a run's dependencies
(models, managed prompts, retrieval) are wired here and nowhere else.
Chroma and the embedding model are opened on first use: a CLI run of an app
without retrieval never pays for them.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from appforge.core.budget import Limits
from appforge.core.db import session_factory
from appforge.core.home import open_database
from appforge.core.keys import ServerKey
from appforge.core.settings import OtelSettings, Settings
from appforge.core.tracing import Tracing
from apps_yaml.flows import Flow
from apps_yaml.runner import Dependencies
from datasources.embedding import Embedder
from datasources.retriever import StoreRetriever
from datasources.search import DEFAULT_KEYWORD_WEIGHT, Mode
from datasources.store import DatasourceStore
from providers.base import Cancel, Provider
from providers.catalog import ModelCatalog
from providers.registry import ProviderRegistry
from runs.errors import RunServiceError
from runs.prompt_refs import StorePrompts


@dataclass
class Services:
    """Settings, database, models, datasources and served flows of this process."""

    settings: Settings
    engine: Engine
    db: sessionmaker[Session]
    key: ServerKey  # encrypts stored secrets, keys token hashes
    models: ProviderRegistry
    flows: Mapping[str, Flow] = field(default_factory=dict)
    tracing: Tracing = field(default_factory=lambda: Tracing(OtelSettings()))
    embedder: Embedder | None = None
    # Datasource names or uuids that retrieve nothing instead of failing the run
    # (``appforge run`` of an app whose datasource is not in this home, with a warning).
    absent_datasources: frozenset[str] = frozenset()
    _datasources: DatasourceStore | None = field(default=None, repr=False)
    _searches: ThreadPoolExecutor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        providers: dict[str, Provider] | None = None,
        embedder: Embedder | None = None,
        flows: Mapping[str, Flow] | None = None,
    ) -> Services:
        """Open the database (migrated) and the model registry; blocking.

        ``providers`` and ``embedder`` are ready models to use (tests share them);
        ``flows`` are the Python flows this process serves, by name.
        """
        engine, key = open_database(settings)
        db = session_factory(engine)
        # The providers and aliases admins store in the database, re-read when they change.
        catalog = ModelCatalog(db, key, settings.model_cache_seconds)
        return cls(
            settings=settings,
            engine=engine,
            db=db,
            key=key,
            models=ProviderRegistry(settings, providers=providers, catalog=catalog),
            flows=dict(flows or {}),
            embedder=embedder,
            tracing=Tracing(settings.otel),
        )

    @property
    def datasources(self) -> DatasourceStore:
        """The datasource store, opened (Chroma) on first use; blocking."""
        if self._datasources is None:
            with self._lock:
                if self._datasources is None:
                    self._datasources = DatasourceStore.open(self.settings, self.db, self.embedder)
        return self._datasources

    @property
    def searches(self) -> ThreadPoolExecutor:
        """The threads runs search on (see :class:`_Retrieval`), started on first use."""
        if self._searches is None:
            with self._lock:
                if self._searches is None:
                    workers = self.settings.runs.workers
                    self._searches = ThreadPoolExecutor(workers, thread_name_prefix="search")
        return self._searches

    def dependencies(self) -> Dependencies:
        """What runners get: the models, the prompts store and the datasources."""
        limits = self.settings.limits
        return Dependencies(
            models=self.models,
            retriever=_Retrieval(self),
            prompts=StorePrompts(self.db),
            template_limits=Limits(limits.max_template_bytes, limits.max_template_items),
        )

    def close(self) -> None:
        """Close the models this process built, the vector index and the database
        connections."""
        self.models.close()
        if self._searches is not None:  # a search left behind ends by the Chroma timeout
            self._searches.shutdown(wait=False, cancel_futures=True)
        if self._datasources is not None:
            self._datasources.close()
        self.tracing.close()
        self.engine.dispose()


class _Retrieval:
    """The engine's ``Retriever``, opening the datasource store at the first search.

    A run's search runs on a thread of its own pool, and the run waits for it only
    until the run's cancel is set (its deadline, its caller gone, a shutdown): a
    Chroma server that hangs is bounded by ``chroma_timeout_seconds`` (30 s by
    default), which may be far past the run's own end. The search left behind
    finishes on its thread within that timeout; one not started yet never starts.
    """

    def __init__(self, services: Services) -> None:
        self._services = services

    def search(
        self,
        datasources: Sequence[str],
        query: str,
        top_k: int,
        where: dict[str, Any] | None,
        mode: Mode | None = None,
        keyword_weight: float = DEFAULT_KEYWORD_WEIGHT,
        cancel: threading.Event | None = None,
    ) -> list[dict[str, Any]]:
        present = [d for d in datasources if d not in self._services.absent_datasources]
        if not present:
            return []

        def search() -> list[dict[str, Any]]:
            retriever = StoreRetriever(self._services.datasources)
            return retriever.search(present, query, top_k, where, mode, keyword_weight)

        if not isinstance(cancel, Cancel):  # nothing can say when to stop waiting
            return search()
        if cancel.is_set():
            raise _stopped()
        searched = self._services.searches.submit(contextvars.copy_context().run, search)
        woken = threading.Event()
        searched.add_done_callback(lambda _: woken.set())
        forget = cancel.when_set(woken.set)
        try:
            woken.wait()
        finally:
            forget()
        if not searched.done():
            searched.cancel()  # still queued: it never runs
            raise _stopped()
        return searched.result()


def _stopped() -> RunServiceError:
    return RunServiceError("the run was cancelled", code="CANCELLED", status_code=499)
