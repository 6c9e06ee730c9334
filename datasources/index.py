"""The vector index: one Chroma collection per datasource, cosine space.

Embeddings are always computed by appforge and passed in; collections are made
with ``embedding_function=None`` so Chroma never downloads or runs its own
model. Chunk ids are ``<entry_uuid>:<n>``.

Score of a hit: cosine similarity, ``1 - cosine distance``, in [-1, 1]; 1 is the
same direction, around 0 unrelated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.client import Client as ChromaClient
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import NotFoundError as ChromaNotFoundError

from appforge.core.modes import private_dir, tighten

_CONFIGURATION: Any = {"hnsw": {"space": "cosine"}}
_ADD_BATCH = 1000


def make_client(chroma_url: str | None, path: Path) -> ClientAPI:
    """A Chroma HttpClient for ``chroma_url``, else a PersistentClient in ``path``."""
    settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        parts = urlsplit(chroma_url)
        ssl = parts.scheme == "https"
        return chromadb.HttpClient(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (443 if ssl else 8000),
            ssl=ssl,
            settings=settings,
        )
    private_dir(path)  # 0700: the index holds the text of every chunk
    client = chromadb.PersistentClient(path=str(path), settings=settings)
    tighten(path)
    return client


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

    def __init__(self, client: ClientAPI) -> None:
        self.client = client

    def close(self) -> None:
        """Release the client: an embedded Chroma's files and threads, a server's
        connections. Chroma shares one system per path in a process; it stops with the
        last client of that path."""
        if isinstance(self.client, ChromaClient):  # what chromadb's factories make
            self.client.close()

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
        """Upsert chunks (same id: replaced)."""
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
        collection = self._collection(datasource_uuid)
        kept = set(ids)
        old = collection.get(where={"entry_uuid": entry_uuid}, include=[])["ids"]
        stale = [i for i in old if i not in kept]
        if stale:
            collection.delete(ids=stale)

    def delete_entry(self, datasource_uuid: str, entry_uuid: str) -> None:
        """Remove every chunk of one entry."""
        collection = self._collection(datasource_uuid, create=False)
        if collection is not None:
            collection.delete(where={"entry_uuid": entry_uuid})

    def drop(self, datasource_uuid: str) -> None:
        """Remove a datasource's collection with all its chunks."""
        try:
            self.client.delete_collection(collection_name(datasource_uuid))
        except (ChromaNotFoundError, ValueError):
            pass

    def count(self, datasource_uuid: str, entry_uuid: str | None = None) -> int:
        """Chunks stored for a datasource, or for one of its entries."""
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
