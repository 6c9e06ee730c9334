"""Retrieval quality on a document set nobody here wrote: the PostgreSQL 15 manual.

Ingests HTML pages of Debian's ``postgresql-doc-15`` package
(``apt-get install postgresql-doc-15``; files under
``/usr/share/doc/postgresql-doc-15/html``) into a datasource through the real
ingestion path (extract, section-aware chunking, MiniLM embeddings, Chroma,
the keyword index on SQLite), then asks the labelled questions of
``bench/retrieval_questions.json`` (each with the page that answers it) in
each search mode and prints, per chunk size tried:

- recall@1 and recall@5: the share of questions whose page is the source of
  the first chunk / one of the first five chunks;
- MRR: the mean of 1 / rank of the first chunk from the right page (0 past 10);
- the ingest rate (pages and chunks per second, embedding included).

The pages are the labelled ones plus the first others in name order, up to
``--pages`` (the issue asks for at least 300). Each chunk size ingests anew,
so several sizes take several times as long: on a busy machine start small
(``--pages 80 --chunk-sizes 1000``).

    .venv/bin/python bench/retrieval.py [--pages 300] [--chunk-sizes 500,1000]
        [--docs DIR] [--questions bench/retrieval_questions.json] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from appforge.core.db import make_engine, migrate, session_factory
from appforge.core.settings import Settings
from datasources.embedding import Embedder
from datasources.entries import NewEntry
from datasources.queue import IngestionQueue
from datasources.search import MODES, Mode, SearchOptions
from datasources.store import DatasourceStore

DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
QUESTIONS = Path(__file__).with_name("retrieval_questions.json")
DEPTH = 10  # ranks looked at for MRR


@dataclass(frozen=True)
class Question:
    text: str
    page: str


@dataclass
class Scores:
    """Per mode: the rank (1-based, 0: not in the first DEPTH) of each question's page."""

    ranks: list[int]

    def recall(self, k: int) -> float:
        return sum(1 for r in self.ranks if 0 < r <= k) / len(self.ranks)

    @property
    def mrr(self) -> float:
        return sum(1 / r for r in self.ranks if r) / len(self.ranks)


@dataclass(frozen=True)
class Ingested:
    pages: int
    chunks: int
    seconds: float


def load_questions(path: Path, limit: int | None) -> list[Question]:
    rows = json.loads(path.read_text())
    questions = [Question(r["question"], r["page"]) for r in rows]
    return questions[:limit] if limit else questions


def pick_pages(docs: Path, questions: list[Question], count: int) -> list[Path]:
    """The labelled pages, then others in name order, ``count`` in all (at least the
    labelled ones)."""
    labelled = sorted({q.page for q in questions})
    missing = [p for p in labelled if not (docs / p).is_file()]
    if missing:
        raise SystemExit(f"pages not found under {docs}: {', '.join(missing[:5])}")
    others = sorted(p.name for p in docs.glob("*.html") if p.name not in labelled)
    names = labelled + others[: max(0, count - len(labelled))]
    return [docs / n for n in names]


def open_store(home: Path, embedder: Embedder) -> DatasourceStore:
    settings = Settings(home=home, admin_token=SecretStr("bench-token-0123456789"))
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    return DatasourceStore.open(settings, session_factory(engine), embedder)


def ingest(store: DatasourceStore, pages: list[Path], chunk_size: int) -> tuple[str, Ingested]:
    """A datasource of ``pages`` chunked at ``chunk_size``, processed to the end."""
    overlap = chunk_size // 10
    source = store.create(f"pg-{chunk_size}", "file", chunk_size, overlap, search_mode="hybrid")
    for page in pages:
        new = NewEntry(name=page.name, file=page.read_bytes(), media_type="text/html")
        store.add_entry(source.uuid, new)
    queue = IngestionQueue(store)
    started = time.perf_counter()
    while queue.run_once():
        pass
    seconds = time.perf_counter() - started
    entries = store.list_entries(source.uuid)
    failed = [e.name for e in entries if e.status != "ready"]
    if failed:
        print(f"  {len(failed)} pages not ready: {', '.join(failed[:5])}")
    chunks = sum(e.chunks_total or 0 for e in entries)
    return source.uuid, Ingested(len(pages), chunks, seconds)


def evaluate(
    store: DatasourceStore, datasource: str, questions: list[Question], mode: Mode
) -> Scores:
    ranks = []
    for q in questions:
        hits = store.search([datasource], q.text, DEPTH, None, SearchOptions(mode))
        pages = [h.metadata.get("source") for h in hits]
        ranks.append(pages.index(q.page) + 1 if q.page in pages else 0)
    return Scores(ranks)


def report(chunk_size: int, ingested: Ingested, scores: dict[str, Scores]) -> None:
    rate = ingested.pages / ingested.seconds if ingested.seconds else 0.0
    chunk_rate = ingested.chunks / ingested.seconds if ingested.seconds else 0.0
    print(
        f"\nchunk_size {chunk_size}: {ingested.pages} pages, {ingested.chunks} chunks in "
        f"{ingested.seconds:.1f} s ({rate:.2f} pages/s, {chunk_rate:.1f} chunks/s)"
    )
    print(f"{'mode':<8} {'recall@1':>9} {'recall@5':>9} {'MRR':>6}")
    for mode, s in scores.items():
        print(f"{mode:<8} {s.recall(1):>9.3f} {s.recall(5):>9.3f} {s.mrr:>6.3f}")
    vector, hybrid = scores.get("vector"), scores.get("hybrid")
    if vector and hybrid and vector.recall(5):
        gain = hybrid.recall(5) / vector.recall(5) - 1
        print(f"hybrid vs vector, recall@5: {gain:+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--chunk-sizes", default="500,1000")
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    args = parser.parse_args()
    questions = load_questions(args.questions, args.limit)
    pages = pick_pages(args.docs, questions, args.pages)
    print(f"{len(questions)} questions over {len(pages)} pages of {args.docs}")
    embedder = Embedder()
    embedder.load()
    for size in [int(s) for s in args.chunk_sizes.split(",") if s]:
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(Path(tmp), embedder)
            datasource, ingested = ingest(store, pages, size)
            scores = {mode: evaluate(store, datasource, questions, mode) for mode in MODES}
            report(size, ingested, scores)


if __name__ == "__main__":
    main()
