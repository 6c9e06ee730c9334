"""The vector index: one Chroma collection per datasource, cosine space.

Embeddings are always computed by appforge and passed in; collections are made
with ``embedding_function=None`` so Chroma never downloads or runs its own
model. Chunk ids are ``<entry_uuid>:<n>``.

Score of a hit: cosine similarity, ``1 - cosine distance``, in [-1, 1]; 1 is the
same direction, around 0 unrelated.

A Chroma server that cannot be reached (down, restarting, a network fault) raises
:class:`~datasources.errors.VectorStoreUnavailableError` (503) from every call, and
the index remembers it: :meth:`VectorIndex.available` then asks the server's
heartbeat again, at most every few seconds, so the ingestion worker waits for the
server instead of failing entries against it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import chromadb
import httpx
from chromadb.api import ClientAPI
from chromadb.api.client import Client as ChromaClient
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import InternalError as ChromaInternalError
from chromadb.errors import NotFoundError as ChromaNotFoundError

from appforge.core.db import storage_full
from appforge.core.errors import StorageFullError
from appforge.core.modes import private_dir, tighten
from appforge.core.outage import Outage
from datasources.errors import VectorStoreUnavailableError

_CONFIGURATION: Any = {"hnsw": {"space": "cosine"}}
_ADD_BATCH = 1000
log = logging.getLogger(__name__)
_RECHECK_SECONDS = 5.0  # how often an unreachable server's heartbeat is asked again
# The free space an embedded Chroma keeps: a write that would leave less is refused
# (STORAGE_FULL) before Chroma sees it. Chroma does not write its files atomically: a
# write that met a full disk left a collection's index file cut short, and every later
# write to that collection failed ("Error deserializing pickle file"). A call that fails
# with less free space than this failed for want of it, whatever its error says.
LOW_SPACE_BYTES = 64 * 2**20


class ChromaNotReachable(Exception):
    """The Chroma server did not answer the client's first call."""


def make_client(chroma_url: str | None, path: Path, timeout: float = 30.0) -> ClientAPI:
    """A Chroma HttpClient for ``chroma_url`` whose every call waits ``timeout`` seconds
    at most, else a PersistentClient in ``path``."""
    settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        parts = urlsplit(chroma_url)
        ssl = parts.scheme == "https"
        _answers(chroma_url, timeout)  # chromadb's own first calls would wait for ever
        try:
            client = chromadb.HttpClient(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or (443 if ssl else 8000),
                ssl=ssl,
                settings=settings,
            )
        except ValueError as exc:  # chromadb's word for "no server there"
            raise ChromaNotReachable(str(exc)) from exc
        _bound(client, timeout)
        return client
    private_dir(path)  # 0700: the index holds the text of every chunk
    client = chromadb.PersistentClient(path=str(path), settings=settings)
    tighten(path)
    return client


def _answers(chroma_url: str, timeout: float) -> None:
    """The server's heartbeat within ``timeout`` seconds (connecting: 5 at most), else
    :class:`ChromaNotReachable`: the client chromadb makes asks the server who we are
    before we can bound its waits, so a hung server would hold that for good."""
    url = f"{chroma_url.rstrip('/')}/api/v2/heartbeat"
    try:
        httpx.get(url, timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0))).raise_for_status()
    except httpx.HTTPError as exc:
        raise ChromaNotReachable(
            f"no heartbeat from {server_address(chroma_url)}: {exc!r}"
        ) from exc


def _bound(client: ClientAPI, timeout: float) -> None:
    """chromadb's HTTP client waits forever for an answer (its httpx session is made with
    ``timeout=None``): a hung server would hold a request, and its thread, for good.
    Its session gets our timeout; a chromadb that no longer keeps one there is refused
    at start rather than left unbounded."""
    session = getattr(getattr(client, "_server", None), "_session", None)
    if not isinstance(session, httpx.Client):
        raise RuntimeError("this chromadb keeps no httpx session to bound: pin a known one")
    session.timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))


def _forget(folder: Path) -> None:
    """Drop the Chroma of ``folder`` from chromadb's cache of one per folder, so that the
    next client of the folder opens it anew instead of sharing a broken one."""
    SharedSystemClient._identifier_to_system.pop(str(folder), None)
    SharedSystemClient._identifier_to_refcount.pop(str(folder), None)


def server_address(chroma_url: str | None) -> str:
    """Where the index is, for the log: the server's scheme, host and port (never any
    credentials in the URL), else ``embedded``."""
    if not chroma_url:
        return "embedded"
    parts = urlsplit(chroma_url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


def collection_name(datasource_uuid: str) -> str:
    return f"ds_{datasource_uuid.replace('-', '')}"


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float
    metadata: dict[str, Any]


class VectorIndex:
    """Chunks of every datasource in Chroma. Blocking: call from threads, not the event loop."""

    def __init__(
        self,
        client: ClientAPI | None = None,
        where: str = "embedded",
        connect: Callable[[], ClientAPI] | None = None,
        files: Path | None = None,
    ) -> None:
        """``client``, or ``connect`` to make one on first use: a server that is not up
        yet when the process starts is then met by the first call, not the start.
        ``files``: the folder of an embedded Chroma (``client`` works on it)."""
        if (client is None) == (connect is None):
            raise ValueError("give a client or a way to connect, not both")
        self._client = client
        self._connect = connect
        self._files = files
        self._outage = Outage(
            log,
            f"the vector store at {where} cannot be reached: {{reason}}",
            f"the vector store at {where} answers again",
        )
        self.recheck_seconds = _RECHECK_SECONDS
        self._connecting = threading.RLock()  # held by the failure of a first call too

    @property
    def client(self) -> ClientAPI:
        """The Chroma client, connected on first use (``VECTOR_STORE_UNAVAILABLE`` if the
        server cannot be reached)."""
        if self._client is None:
            with self._connecting, self._reaching():
                if self._client is None and self._connect is not None:
                    self._client = self._connect()
                elif self._client is None:  # an embedded one, dropped after a failure
                    assert self._files is not None
                    self._client = make_client(None, self._files)
        return self._client

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """A call to Chroma: a transport failure becomes ``VECTOR_STORE_UNAVAILABLE``."""
        try:
            yield
        except (httpx.TransportError, ConnectionError, ChromaNotReachable) as exc:
            self._outage.failed(repr(exc))  # the log names the server; callers do not
            raise VectorStoreUnavailableError(
                "the vector store cannot be reached; try again shortly"
            ) from exc
        except Exception as exc:
            broken = self._files is not None and isinstance(exc, ChromaInternalError)
            if broken:
                self._drop()
            if storage_full(exc) or (broken and self._short_of(0)):  # whatever its words
                raise StorageFullError from exc
            raise
        self._outage.answered()

    def _short_of(self, need: int) -> bool:
        """Whether an embedded Chroma's disk lacks ``need`` bytes with
        :data:`LOW_SPACE_BYTES` to spare (a server's disk is its own business)."""
        if self._files is None:
            return False
        return shutil.disk_usage(self._files).free < LOW_SPACE_BYTES + need

    def _drop(self) -> None:
        """Drop an embedded Chroma's client and its broken state: the next call opens the
        files again. A write that failed for want of space could leave the next write of
        the same client waiting for ever, holding the interpreter's lock (the whole
        process froze); an opening that failed left chromadb's cache holding a Chroma
        that never works."""
        assert self._files is not None
        log.warning("the embedded Chroma failed a call: it is opened again at the next")
        with self._connecting:
            _forget(self._files)
            self._client = None

    def available(self) -> bool:
        """False while the server is known to be unreachable: after a failed call, until
        its heartbeat answers (asked at most every few seconds)."""
        failed_at = self._outage.last_failure
        if failed_at is None:
            return True
        if time.monotonic() - failed_at < self.recheck_seconds:
            return False
        try:
            self.heartbeat()  # its answer ends the outage
        except VectorStoreUnavailableError:
            return False
        return True

    def heartbeat(self) -> None:
        """Ask the store if it is there (``VECTOR_STORE_UNAVAILABLE`` if not)."""
        with self._reaching():
            self.client.heartbeat()

    def close(self) -> None:
        """Release the client: an embedded Chroma's files and threads, a server's
        connections. Chroma shares one system per path in a process; it stops with the
        last client of that path."""
        if isinstance(self._client, ChromaClient):  # what chromadb's factories make
            self._client.close()

    def _collection(self, datasource_uuid: str, create: bool = True) -> Any:
        name = collection_name(datasource_uuid)
        if create:
            return self.client.get_or_create_collection(
                name, embedding_function=None, configuration=_CONFIGURATION
            )
        try:
            return self.client.get_collection(name, embedding_function=None)
        except (ChromaNotFoundError, ValueError):
            return None

    def add(
        self,
        datasource_uuid: str,
        ids: list[str],
        embeddings: Any,
        texts: list[str],
        metadatas: list[dict[str, Any]],
    ) -> None:
        """Upsert chunks (same id: replaced); ``STORAGE_FULL`` first if an embedded
        Chroma's disk has not room enough (:data:`LOW_SPACE_BYTES` to spare)."""
        # The text is kept twice (documents, full-text index), the vectors once, in Chroma's
        # log first and then its segments: room for four times both.
        if self._short_of(4 * (2 * sum(len(t) for t in texts) + getattr(embeddings, "nbytes", 0))):
            raise StorageFullError
        with self._reaching():
            collection = self._collection(datasource_uuid)
            for start in range(0, len(ids), _ADD_BATCH):
                end = start + _ADD_BATCH
                collection.upsert(
                    ids=ids[start:end],
                    embeddings=embeddings[start:end],
                    documents=texts[start:end],
                    metadatas=metadatas[start:end],
                )

    def replace_entry(
        self,
        datasource_uuid: str,
        entry_uuid: str,
        ids: list[str],
        embeddings: Any,
        texts: list[str],
        metadatas: list[dict[str, Any]],
    ) -> None:
        """An entry's chunks become these: upserted under their ids (``<entry>:<n>``, so
        each replaces its old namesake in place), then the old ones past the new count
        deleted. A search meanwhile finds each chunk id once, never an entry with none."""
        self.add(datasource_uuid, ids, embeddings, texts, metadatas)
        with self._reaching():
            collection = self._collection(datasource_uuid)
            kept = set(ids)
            old = collection.get(where={"entry_uuid": entry_uuid}, include=[])["ids"]
            stale = [i for i in old if i not in kept]
            if stale:
                collection.delete(ids=stale)

    def delete_entry(self, datasource_uuid: str, entry_uuid: str) -> None:
        """Remove every chunk of one entry."""
        with self._reaching():
            collection = self._collection(datasource_uuid, create=False)
            if collection is not None:
                collection.delete(where={"entry_uuid": entry_uuid})

    def drop(self, datasource_uuid: str) -> None:
        """Remove a datasource's collection with all its chunks."""
        with self._reaching():
            try:
                self.client.delete_collection(collection_name(datasource_uuid))
            except (ChromaNotFoundError, ValueError):
                pass

    def count(self, datasource_uuid: str, entry_uuid: str | None = None) -> int:
        """Chunks stored for a datasource, or for one of its entries."""
        with self._reaching():
            collection = self._collection(datasource_uuid, create=False)
            if collection is None:
                return 0
            if entry_uuid is None:
                return int(collection.count())
            return len(collection.get(where={"entry_uuid": entry_uuid}, include=[])["ids"])

    def query(
        self,
        datasource_uuid: str,
        embedding: Any,
        top_k: int,
        where: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``top_k`` nearest chunks passing ``where`` (a Chroma filter), best first."""
        with self._reaching():
            collection = self._collection(datasource_uuid, create=False)
            if collection is None:
                return []
            result = collection.query(
                query_embeddings=[embedding],
                n_results=top_k,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        ids = result["ids"][0]
        documents = (result["documents"] or [[]])[0]
        metadatas = (result["metadatas"] or [[]])[0]
        distances = (result["distances"] or [[]])[0]
        return [
            Hit(id=i, text=d or "", score=1.0 - float(dist), metadata=dict(m or {}))
            for i, d, m, dist in zip(ids, documents, metadatas, distances, strict=True)
        ]
