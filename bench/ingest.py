"""Ingestion throughput and search latency, against the raw libraries doing the same work.

Ingestion: 2,000 text entries (one chunk each, ~300-500 characters) are added
to a datasource and drained by one in-process ingestion worker (SQLite, Chroma
PersistentClient in a temp dir); compared with ``SentenceTransformer.encode``
of the very same chunk texts (batch 64). Goal: throughput >= 0.9x raw.

Search: a datasource holding N chunks (10k, 100k; random unit vectors written
straight into its collection, as embedding 100k chunks would only measure the
model) is searched through ``DatasourceStore.search`` (query embedding +
filter translation + Chroma query), and compared with the raw path:
``encode([query])`` + ``collection.query``. With and without a filter on
``md_group``. Goal: p50/p99 <= 1.2x raw.

    .venv/bin/python bench/ingest.py [--entries 2000] [--sizes 10000,100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import SecretStr

from appforge.core.db import make_engine, migrate, session_factory
from appforge.core.settings import Settings
from datasources.chunking import split
from datasources.embedding import Embedder
from datasources.entries import NewEntry
from datasources.filters import translate
from datasources.queue import IngestionQueue
from datasources.store import DatasourceStore

WORDS = (
    "refund shipping parcel warranty invoice account password order return delivery courier "
    "battery charger screen keyboard subscription discount voucher support store opening"
).split()


def _text(i: int, rng: np.random.Generator) -> str:
    n = int(rng.integers(45, 75))
    words = " ".join(rng.choice(WORDS, n))
    return f"Article {i}: {words}."


def _store(home: Path, embedder: Embedder) -> tuple[DatasourceStore, object]:
    settings = Settings(home=home, admin_token=SecretStr("x"))
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    return DatasourceStore.open(settings, session_factory(engine), embedder), engine


def bench_ingest(embedder: Embedder, entries: int) -> None:
    rng = np.random.default_rng(1)
    texts = [_text(i, rng) for i in range(entries)]
    with tempfile.TemporaryDirectory() as tmp:
        store, engine = _store(Path(tmp), embedder)
        ds = store.create("bench", "text")
        started = time.perf_counter()
        for i, text in enumerate(texts):
            store.add_entry(ds.uuid, NewEntry(name=f"e{i}", content=text, metadata={"n": i}))
        add_s = time.perf_counter() - started
        queue = IngestionQueue(store)
        started = time.perf_counter()
        while queue.run_once():
            pass
        ingest_s = time.perf_counter() - started
        chunks = [c for t in texts for c in split(t, 1000, 150)]
        assert store.index.count(ds.uuid) == len(chunks)
        model = embedder.load()
        started = time.perf_counter()
        model.encode(chunks, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        raw_s = time.perf_counter() - started
        engine.dispose()  # type: ignore[attr-defined]
    print(f"\nIngestion: {entries} entries, {len(chunks)} chunks")
    print(f"{'path':<42}{'seconds':>10}{'chunks/s':>12}")
    print(f"{'raw SentenceTransformer.encode':<42}{raw_s:>10.2f}{len(chunks) / raw_s:>12.1f}")
    print(
        f"{'appforge worker (extract..index)':<42}{ingest_s:>10.2f}{len(chunks) / ingest_s:>12.1f}"
    )
    print(f"{'(adding the entries via the store)':<42}{add_s:>10.2f}{entries / add_s:>12.1f}")
    print(f"throughput ratio appforge/raw: {raw_s / ingest_s:.2f}x (goal >= 0.9x)")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_search(embedder: Embedder, size: int, queries: int) -> None:
    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory() as tmp:
        store, engine = _store(Path(tmp), embedder)
        ds = store.create("search", "text")
        started = time.perf_counter()
        for start in range(0, size, 5000):
            n = min(5000, size - start)
            vectors = rng.normal(size=(n, embedder.dimension)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ids = [f"e{i}:0" for i in range(start, start + n)]
            metas = [
                {"md_group": i % 10, "source": f"e{i}", "entry_uuid": f"e{i}"}
                for i in range(start, start + n)
            ]
            store.index.add(ds.uuid, ids, vectors, [f"chunk {i}" for i in ids], metas)
        fill_s = time.perf_counter() - started
        collection = store.index._collection(ds.uuid, create=False)
        model = embedder.load()
        rows = []
        for label, where in (("no filter", None), ("md_group == 3", {"md_group": 3})):
            chroma_where = translate(where)
            ours: list[float] = []
            raw: list[float] = []
            for q in range(queries):
                text = f"how do I get a refund for order {q} {WORDS[q % len(WORDS)]}"
                # Interleaved, so drift in machine speed hits both alike.
                t = time.perf_counter()
                vector = model.encode(
                    [text + " raw"], normalize_embeddings=True, show_progress_bar=False
                )[0]
                collection.query(
                    query_embeddings=[vector],
                    n_results=4,
                    where=chroma_where,
                    include=["documents", "metadatas", "distances"],
                )
                raw.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                store.search([ds.uuid], text, 4, where)
                ours.append((time.perf_counter() - t) * 1000)
            rows.append((label, raw, ours))
        engine.dispose()  # type: ignore[attr-defined]
    print(f"\nSearch: {size} chunks (filled in {fill_s:.0f} s), {queries} queries, top_k 4")
    header = ("raw p50", "raw p99", "ours p50", "ours p99", "p50 x", "p99 x")
    print(f"{'filter':<16}" + "".join(f"{h:>10}" for h in header))
    for label, raw, ours in rows:
        r50, r99, o50, o99 = _pct(raw, 0.5), _pct(raw, 0.99), _pct(ours, 0.5), _pct(ours, 0.99)
        print(
            f"{label:<16}{r50:>10.2f}{r99:>10.2f}{o50:>10.2f}{o99:>10.2f}"
            f"{o50 / r50:>10.2f}{o99 / r99:>10.2f}"
        )
    print("(milliseconds; goal: ours <= 1.2x raw)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    embedder = Embedder()
    embedder.load()
    embedder.encode(["warm up"])
    if not args.skip_ingest:
        bench_ingest(embedder, args.entries)
    for size in (int(s) for s in args.sizes.split(",") if s):
        bench_search(embedder, size, args.queries)


if __name__ == "__main__":
    main()
