"""Retrieval quality on a document set nobody here wrote: the PostgreSQL 15 manual.

Ingests HTML pages of Debian's ``postgresql-doc-15`` package
(``apt-get install postgresql-doc-15``; files under
``/usr/share/doc/postgresql-doc-15/html``) into a datasource through the real
ingestion path (extract, section-aware chunking, MiniLM embeddings, Chroma,
the keyword index on SQLite), then asks the labelled questions of
``bench/retrieval_questions.json`` in each search mode and prints, per chunk
size tried:

- recall@1 and recall@5: the share of questions for which the first chunk /
  one of the first five chunks comes from a page that answers it;
- MRR: the mean of 1 / rank of the first chunk from such a page (0 past 10);
- the ingest rate (pages and chunks per second, embedding included), and the
  share of chunks longer than the model's window (their tail is not embedded).

Each question names the page that answers it (``page``) and, in ``also``,
other pages of the manual that answer it as fully (a tutorial section beside
the reference page, say); a chunk from any of them counts. Each has a ``kind``:
``paraphrase`` (asked in a user's own words: "how do I back up one
database?") or ``exact-term`` (asked with the manual's own words, as a user
who saw them would: a setting, function or option by name, an error message
pasted whole). The figures are printed per kind and over all questions.

The pages are every labelled one, then others spread evenly over the manual
(every n-th in name order) up to ``--pages`` (``all``: every page), so the
distractors come from all of its parts. ``--page-list FILE`` ingests the pages
a file names instead (``bench/retrieval_pages_300.txt``: the 300 pages the
first runs used; it holds every page a question names).

The embedding pass is the slow part, and it is done once per chunk size: the
three modes (and the ``--weights`` tried) search the same datasource, and each
question's embedding is computed once for all of them.
With ``--home DIR`` the datasources are kept, and a later run with the same
pages and chunk size reuses them instead of embedding again (for trying a
search-side change); without it they go to a temporary folder.

    .venv/bin/python bench/retrieval.py [--pages 300|all | --page-list FILE]
        [--chunk-sizes 400,700,1000] [--overlap 0.15] [--home DIR] [--weights 0.3,0.7]
        [--misses]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import SecretStr
from sqlalchemy import select

from appforge.core.db import make_engine, migrate, session_factory
from appforge.core.settings import Settings
from datasources.embedding import Embedder
from datasources.entries import NewEntry
from datasources.queue import IngestionQueue
from datasources.search import DEFAULT_KEYWORD_WEIGHT, MODES, SearchOptions
from datasources.store import DatasourceStore
from datasources.tables import Chunk

DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
QUESTIONS = Path(__file__).with_name("retrieval_questions.json")
DEPTH = 10  # ranks looked at for MRR


KINDS = ("paraphrase", "exact-term")
ALL = "all"  # the kind under which every question is counted


@dataclass(frozen=True)
class Question:
    text: str
    pages: tuple[str, ...]  # the labelled page first, then the others that answer it
    kind: str = "paraphrase"  # one of KINDS


def rank(sources: Sequence[str | None], relevant: Sequence[str]) -> int:
    """The 1-based rank of the first source among ``relevant``, 0 if none is."""
    for position, source in enumerate(sources, start=1):
        if source in relevant:
            return position
    return 0


@dataclass(frozen=True)
class Scores:
    """One mode's ranks (1-based, 0: not in the first DEPTH), one per question."""

    ranks: tuple[int, ...]

    def recall(self, k: int) -> float:
        """The share of questions answered within the first ``k`` results."""
        return sum(1 for r in self.ranks if 0 < r <= k) / len(self.ranks)

    @property
    def mrr(self) -> float:
        """Mean reciprocal rank (0 for a question not answered in the first DEPTH)."""
        return sum(1 / r for r in self.ranks if r) / len(self.ranks)


@dataclass(frozen=True)
class Ingested:
    pages: int
    chunks: int
    seconds: float
    over_window: float  # share of chunks longer than the model's window
    embedded: int  # chunks embedded in ``seconds`` (the others came from the cache)
    cpu_seconds: float  # this process's CPU time meanwhile (a figure a busy machine keeps)
    reused: bool = False


class CachedEmbedder(Embedder):
    """The embedder, remembering every text's vector by its hash in ``path`` (SQLite).

    Each question is embedded once for the vector and hybrid searches of every
    chunk size; a chunk text met again (the same text in several pages, or a run
    started again after it was stopped, with ``--home``) is not embedded again.
    ``fresh`` counts the texts this process really embedded.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.fresh = 0
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (hash TEXT PRIMARY KEY, v BLOB)")

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        known = self._known(keys)
        todo: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in known:
                todo.setdefault(key, text)
        if todo:
            vectors = super().encode(list(todo.values()))
            self.fresh += len(todo)
            rows = [(k, v.tobytes()) for k, v in zip(todo, vectors, strict=True)]
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            known.update({k: v for k, v in zip(todo, vectors, strict=True)})
        if not texts:
            return super().encode(texts)
        return np.stack([known[k] for k in keys]).astype(np.float32)

    def _known(self, keys: list[str]) -> dict[str, NDArray[np.float32]]:
        found: dict[str, NDArray[np.float32]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            query = f"SELECT hash, v FROM vectors WHERE hash IN ({marks})"
            for key, blob in self._db.execute(query, part):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found


class NoEmbedding(Embedder):
    """For ``--keyword-only``: chunks get random unit vectors (seeded by their text) and
    no model runs on them, so only keyword search is measured (it never reads a vector);
    the model is loaded for its tokenizer alone."""

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            row = np.random.default_rng(seed).standard_normal(self.dimension)
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimension)


def load_questions(path: Path, limit: int | None = None) -> list[Question]:
    rows = json.loads(path.read_text())
    questions = []
    for r in rows:
        if r.get("kind") not in KINDS:
            raise SystemExit(f"question {r['question']!r}: kind must be one of {KINDS}")
        questions.append(Question(r["question"], (r["page"], *r.get("also", ())), r["kind"]))
    return questions[:limit] if limit else questions


def by_kind(questions: Sequence[Question], scores: Scores) -> dict[str, Scores]:
    """One mode's scores split by the questions' kind (in KINDS order, the kinds asked),
    then over every question under ``ALL``."""
    split = {
        kind: Scores(
            tuple(r for q, r in zip(questions, scores.ranks, strict=True) if q.kind == kind)
        )
        for kind in KINDS
        if any(q.kind == kind for q in questions)
    }
    return {**split, ALL: scores}


def pick_pages(docs: Path, questions: list[Question], count: int) -> list[Path]:
    """Every page a question names, then others spread evenly over the rest in name
    order, ``count`` in all (at least the named ones)."""
    labelled = sorted({p for q in questions for p in q.pages})
    missing = [p for p in labelled if not (docs / p).is_file()]
    if missing:
        raise SystemExit(f"pages not found under {docs}: {', '.join(missing[:5])}")
    others = sorted(p.name for p in docs.glob("*.html") if p.name not in labelled)
    wanted = min(len(others), max(0, count - len(labelled)))
    spread = [others[i * len(others) // wanted] for i in range(wanted)] if wanted else []
    return [docs / n for n in labelled + spread]


def listed_pages(docs: Path, questions: list[Question], listing: Path) -> list[Path]:
    """The pages named in ``listing`` (one file name a line), which must hold every page
    a question names: a fixed set, for comparing runs whose questions differ."""
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    missing = [n for n in names if not (docs / n).is_file()]
    if missing:
        raise SystemExit(f"pages not found under {docs}: {', '.join(missing[:5])}")
    unlisted = sorted({p for q in questions for p in q.pages} - set(names))
    if unlisted:
        raise SystemExit(
            f"pages named by questions but not in {listing}: {', '.join(unlisted[:5])}"
        )
    return [docs / n for n in dict.fromkeys(names)]


def open_store(home: Path, embedder: Embedder) -> DatasourceStore:
    settings = Settings(home=home, admin_token=SecretStr("bench-token-0123456789"))
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    return DatasourceStore.open(settings, session_factory(engine), embedder)


def datasource_name(pages: list[Path], size: int, overlap: int, kind: str) -> str:
    """Names a datasource by what it holds, so a kept home is reused only when it fits
    (whatever the order the pages were picked in)."""
    names = sorted(p.name for p in pages)
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:10]
    return f"pg-{kind}-{size}-{overlap}-{len(pages)}-{digest}"


def ingest(
    store: DatasourceStore, pages: list[Path], size: int, overlap: int
) -> tuple[str, Ingested]:
    """A datasource of ``pages`` chunked at ``size``, processed to the end (or the one a
    kept home already holds)."""
    kind = "keyword" if isinstance(store.embedder, NoEmbedding) else "minilm"
    name = datasource_name(pages, size, overlap, kind)
    log = store.settings.home / "ingest.json"
    timings = json.loads(log.read_text()) if log.is_file() else {}
    existing = store.resolve(name)
    if existing is not None and name in timings:
        earlier = {"cpu_seconds": 0.0, **timings[name], "reused": True}
        return existing.uuid, Ingested(**earlier)
    if existing is not None:  # an interrupted run: start again
        store.delete(existing.uuid)
    source = store.create(name, "file", size, overlap, search_mode="hybrid")
    for page in pages:
        new = NewEntry(name=page.name, file=page.read_bytes(), media_type="text/html")
        store.add_entry(source.uuid, new)
    queue = IngestionQueue(store)
    fresh = store.embedder.fresh if isinstance(store.embedder, CachedEmbedder) else 0
    started, cpu = time.perf_counter(), time.process_time()
    while queue.run_once():
        pass
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    entries = store.list_entries(source.uuid)
    failed = [e.name for e in entries if e.status != "ready"]
    if failed:
        print(f"  {len(failed)} pages not ready: {', '.join(failed[:5])}")
    chunks = sum(e.chunks_total or 0 for e in entries)
    if isinstance(store.embedder, CachedEmbedder):
        fresh = store.embedder.fresh - fresh
    window = over_window(store, source.uuid)
    result = Ingested(len(pages), chunks, seconds, window, fresh, cpu)
    timings[name] = {k: v for k, v in result.__dict__.items() if k != "reused"}
    log.write_text(json.dumps(timings, indent=1))
    return source.uuid, result


def over_window(store: DatasourceStore, datasource: str) -> float:
    """The share of the datasource's chunks with more tokens than the model reads."""
    model = store.embedder.load()
    window = int(model.max_seq_length)
    with store.db() as db:
        texts = list(db.scalars(select(Chunk.text).where(Chunk.datasource_uuid == datasource)))
    if not texts:
        return 0.0
    lengths = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=True)["input_ids"]]
    return sum(1 for n in lengths if n > window) / len(lengths)


def evaluate(
    store: DatasourceStore, datasource: str, questions: list[Question], options: SearchOptions
) -> Scores:
    ranks = []
    for q in questions:
        hits = store.search([datasource], q.text, DEPTH, None, options)
        ranks.append(rank([h.metadata.get("source") for h in hits], q.pages))
    return Scores(tuple(ranks))


@dataclass(frozen=True)
class Result:
    size: int
    ingested: Ingested
    scores: dict[str, Scores]  # by mode (and hybrid weight tried), in question order
    questions: tuple[Question, ...]

    def rows(self) -> list[tuple[str, str, Scores]]:
        """(mode, kind, scores) for each mode, each kind asked, then every question."""
        return [
            (mode, kind, split)
            for mode, scores in self.scores.items()
            for kind, split in by_kind(self.questions, scores).items()
        ]

    def gains(self) -> dict[str, float]:
        """Hybrid's recall@5 over vector's, relative (+0.1: 10 % better), per kind and
        over every question; a kind vector answers nothing of is left out."""
        vector, hybrid = self.scores.get("vector"), self.scores.get("hybrid")
        if vector is None or hybrid is None:
            return {}
        hybrid_kinds = by_kind(self.questions, hybrid)
        return {
            kind: hybrid_kinds[kind].recall(5) / v.recall(5) - 1
            for kind, v in by_kind(self.questions, vector).items()
            if v.recall(5)
        }


def chunk_rate(ing: Ingested) -> float:
    """Chunks embedded and indexed per second (cached ones not counted)."""
    return ing.embedded / ing.seconds if ing.seconds else 0.0


def report(result: Result) -> None:
    ing = result.ingested
    done = f"{ing.chunks} chunks in {ing.seconds:.1f} s"
    if ing.reused:
        done += " (ingested by an earlier run)"
    if not ing.embedded:
        done += " (nothing embedded: keyword only, or every vector was cached)"
    elif ing.embedded == ing.chunks and ing.seconds:
        done += f" ({ing.pages / ing.seconds:.2f} pages/s, {chunk_rate(ing):.2f} chunks/s)"
    else:
        done += f" ({ing.embedded} embedded, {chunk_rate(ing):.2f}/s; the others were cached)"
    if ing.cpu_seconds and ing.embedded:
        done += f", {ing.embedded / ing.cpu_seconds:.1f} chunks per CPU second"
    print(
        f"\nchunk_size {result.size}: {ing.pages} pages, {done}; "
        f"{ing.over_window:.0%} of chunks are longer than the model's window"
    )
    print(f"{'mode':<16} {'kind':<11} {'n':>3} {'recall@1':>9} {'recall@5':>9} {'MRR':>6}")
    for mode, kind, s in result.rows():
        print(
            f"{mode:<16} {kind:<11} {len(s.ranks):>3} "
            f"{s.recall(1):>9.3f} {s.recall(5):>9.3f} {s.mrr:>6.3f}"
        )
    for kind, gain in result.gains().items():
        print(f"hybrid vs vector, recall@5, {kind}: {gain:+.1%}")


def table(results: list[Result]) -> None:
    """The runs as one Markdown table (the README's): per chunk size, mode and kind."""
    questions = results[0].questions
    asked = Counter(q.kind for q in questions)
    counts = ", ".join(f"{asked[kind]} {kind}" for kind in KINDS if asked[kind])
    print(f"\n{counts} questions, {results[0].ingested.pages} pages, {datetime.date.today()}")
    print("| chunk size | chunks | chunks/s | mode | kind | recall@1 | recall@5 | MRR |")
    print("| ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |")
    for r in results:
        rate = chunk_rate(r.ingested)
        shown = "-" if not r.ingested.embedded else f"{rate:.2f}"
        previous = ""
        for n, (mode, kind, s) in enumerate(r.rows()):
            head = f"| {r.size} | {r.ingested.chunks} | {shown}" if n == 0 else "| | |"
            named = mode if mode != previous else ""
            previous = mode
            figures = f"{s.recall(1):.3f} | {s.recall(5):.3f} | {s.mrr:.3f}"
            print(f"{head} | {named} | {kind} | {figures} |")
    print()
    for r in results:
        gains = ", ".join(f"{kind} {gain:+.1%}" for kind, gain in r.gains().items())
        if gains:
            print(f"chunk size {r.size}, hybrid over vector on recall@5: {gains}")


def misses(questions: list[Question], scores: dict[str, Scores]) -> None:
    """Per question, each mode's rank (for finding out why a mode misses)."""
    print("ranks (0: not in the first 10): " + " ".join(scores))
    for i, q in enumerate(questions):
        ranks = " ".join(f"{s.ranks[i]:>2}" for s in scores.values())
        print(f"  {ranks}  {q.kind:<10} {q.pages[0]:<34} {q.text}")


@contextlib.contextmanager
def home_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def run_size(
    store: DatasourceStore, pages: list[Path], questions: list[Question], size: int, args: Any
) -> Result:
    datasource, ingested = ingest(store, pages, size, round(size * args.overlap))
    modes = ("keyword",) if args.keyword_only else MODES
    scores: dict[str, Scores] = {
        m: evaluate(store, datasource, questions, SearchOptions(m)) for m in modes
    }
    for weight in [] if args.keyword_only else args.weights:
        options = SearchOptions("hybrid", weight)
        scores[f"hybrid w={weight:g}"] = evaluate(store, datasource, questions, options)
    result = Result(size, ingested, scores, tuple(questions))
    report(result)
    if args.misses:
        misses(questions, scores)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument(
        "--pages",
        type=lambda s: None if s == "all" else int(s),
        default=300,
        help="how many pages to ingest (all: every page of the manual)",
    )
    parser.add_argument(
        "--page-list",
        type=Path,
        default=None,
        help="ingest the pages named in this file (one a line) instead of picking --pages",
    )
    parser.add_argument("--chunk-sizes", default="400,700,1000")
    parser.add_argument(
        "--overlap", type=float, default=0.15, help="overlap as a share of the chunk size"
    )
    parser.add_argument("--home", type=Path, default=None, help="keep (and reuse) datasources")
    parser.add_argument(
        "--weights",
        type=lambda s: [float(w) for w in s.split(",") if w],
        default=[],
        help=f"hybrid keyword weights to try besides the default {DEFAULT_KEYWORD_WEIGHT}",
    )
    parser.add_argument("--misses", action="store_true", help="print each question's ranks")
    parser.add_argument(
        "--keyword-only",
        action="store_true",
        help="measure keyword search alone, without embedding (seconds instead of hours)",
    )
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    args = parser.parse_args()
    questions = load_questions(args.questions, args.limit)
    if args.page_list is not None:
        pages = listed_pages(args.docs, questions, args.page_list)
    else:
        count = len(list(args.docs.glob("*.html"))) if args.pages is None else args.pages
        pages = pick_pages(args.docs, questions, count)
    print(f"{len(questions)} questions over {len(pages)} pages of {args.docs}")
    results = []
    with home_dir(args.home) as home:
        embedder: Embedder = (
            NoEmbedding() if args.keyword_only else CachedEmbedder(home / "embeddings.sqlite")
        )
        embedder.load()
        store = open_store(home, embedder)
        for size in [int(s) for s in args.chunk_sizes.split(",") if s]:
            results.append(run_size(store, pages, questions, size, args))
    table(results)


if __name__ == "__main__":
    main()
