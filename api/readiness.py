"""Readiness: whether this API process can serve requests now (``GET /api/health/ready``).

Checked, each in a worker thread, all at once, each bounded by
``APPFORGE_HEALTH__TIMEOUT_SECONDS``:

- ``database``: one ``SELECT 1``;
- ``vector_store``: Chroma answers its heartbeat (files, or the server);
- ``redis``: when ``APPFORGE_REDIS_URL`` is set, a ``PING``;
- ``model:<provider>``: for every provider a model alias points at, and every
  configured OpenAI-compatible server: a local model's GGUF file is there (or
  the model is loaded), a server answers ``GET /models`` (no retries);
- ``embedding_model``: in a process that runs ingestion workers, the embedding
  model is loaded (it loads in the background from start-up when the database
  has a datasource, else with the first entry; ``loading`` is not ready, and an
  entry claimed meanwhile shows the stage ``loading model``);
- ``shutdown``: the process is not draining after a SIGTERM.

A slow check holds its thread past the timeout but never the answer. The answer
is kept ``APPFORGE_HEALTH__CACHE_SECONDS``, so frequent probes from many load
balancers cost the backends one check per process per period (``shutdown`` and
``embedding_model`` cost nothing and are never cached).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from appforge.core.settings import Settings
from datasources.errors import VectorStoreUnavailableError
from runs.services import Services


@dataclass(frozen=True)
class Check:
    """One readiness check: its name, whether it passed, why not, how long it took."""

    name: str
    ok: bool
    ms: float
    error: str | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "ms": round(self.ms, 1)}
        if self.error is not None:
            out["error"] = self.error
        return out


def _database(services: Services) -> None:
    with services.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _vector_store(services: Services) -> None:
    try:
        services.datasources.index.heartbeat()
    except VectorStoreUnavailableError as exc:  # the operator reads why: the transport error
        if exc.__cause__ is None:
            raise
        raise exc.__cause__ from None


def _redis(url: str, timeout: float) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def _model(services: Services, name: str, timeout: float) -> None:
    from providers.local import LocalProvider
    from providers.openai_compat import OpenAICompatProvider

    provider = services.models.provider(name)
    if isinstance(provider, LocalProvider):
        if not (provider.is_loaded or provider.is_available()):
            raise RuntimeError("the GGUF model file is missing")
    elif isinstance(provider, OpenAICompatProvider):
        found = provider.ping(timeout)
        if not found.reachable:
            error = found.error or {}
            raise RuntimeError(str(error.get("message") or "the model server did not answer"))


def model_providers(settings: Settings, services: Services) -> list[str]:
    """The providers worth checking: those a model alias points at, and named servers."""
    names = set(settings.providers)
    for alias in settings.models:
        try:
            names.add(services.models.split(alias)[0])
        except Exception:  # a broken alias fails its runs, not this process's readiness
            continue
    return sorted(names)


def embedding_model(services: Services) -> Check | None:
    """Whether this process's embedding model is loaded; None if it runs no ingestion
    (it loads the model on first use, and nothing waits for it). Not asked for yet
    (no datasource when the process started) is ready: it loads with the first entry."""
    if services.settings.datasources.workers < 1:
        return None
    embedder = services.datasources.embedder
    state = embedder.state
    if state in ("loaded", "idle"):
        return Check("embedding_model", True, 0.0)
    if state == "failed":
        return Check("embedding_model", False, 0.0, f"failed to load: {embedder.error}")
    return Check("embedding_model", False, 0.0, "loading")


class Readiness:
    """The checks of one API process, with their last answer cached for a few seconds."""

    def __init__(self, services: Services, draining: Callable[[], bool]) -> None:
        self.services = services
        self.settings = services.settings
        self._draining = draining
        self._cached: tuple[float, list[Check]] | None = None
        self._lock = asyncio.Lock()

    def _checks(self) -> dict[str, Callable[[], None]]:
        services, timeout = self.services, self.settings.health.timeout_seconds
        checks: dict[str, Callable[[], None]] = {
            "database": lambda: _database(services),
            "vector_store": lambda: _vector_store(services),
        }
        redis_url = self.settings.redis_url
        if redis_url:
            checks["redis"] = lambda: _redis(redis_url, timeout)
        for name in model_providers(self.settings, services):
            checks[f"model:{name}"] = partial(_model, services, name, timeout)
        return checks

    async def report(self) -> list[Check]:
        """Every check's result; the cached one if it is fresh (not ``shutdown`` and
        ``embedding_model``: they are read each time)."""
        draining = Check("shutdown", not self._draining(), 0.0, None)
        if not draining.ok:
            draining = Check("shutdown", False, 0.0, "the process is shutting down")
        async with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.settings.health.cache_seconds:
                checks = self._checks()
                results = await asyncio.gather(*(self._run(n, f) for n, f in checks.items()))
                self._cached = (time.monotonic(), list(results))
            cached = self._cached[1]
        model = embedding_model(self.services)
        return [*cached, *([model] if model is not None else []), draining]

    async def _run(self, name: str, check: Callable[[], None]) -> Check:
        started = time.perf_counter()
        timeout = self.settings.health.timeout_seconds
        try:
            await asyncio.wait_for(run_in_threadpool(check), timeout)
        except TimeoutError:
            error = f"no answer within {timeout:g} s (APPFORGE_HEALTH__TIMEOUT_SECONDS)"
            return Check(name, False, (time.perf_counter() - started) * 1000, error)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            return Check(name, False, (time.perf_counter() - started) * 1000, error)
        return Check(name, True, (time.perf_counter() - started) * 1000)
