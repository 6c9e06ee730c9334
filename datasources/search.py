"""Searching datasources in one of three modes, and what each mode's score means.

- ``vector``: the chunks nearest the query's embedding (Chroma). ``score`` is
  cosine similarity, ``1 - cosine distance``, in [-1, 1].
- ``keyword``: full-text matches of the query's words (:mod:`datasources.keywords`).
  ``score`` is ``-bm25`` on SQLite, ``ts_rank`` on PostgreSQL: higher is better,
  comparable only within one search.
- ``hybrid``: both lists (``fusion_depth`` long each) fused by reciprocal rank:
  a chunk at rank ``r`` of a list earns ``weight * (K + 1) / (K + r)`` with
  ``K = 60``, the keyword list weighing ``keyword_weight`` and the vector list
  ``1 - keyword_weight``. ``score`` is the sum, in (0, 1]: 1 is first in both.

A ``where`` filter applies to every mode. Several datasources are searched as
one: their lists are merged by score before fusing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from datasources.index import Hit

Mode = Literal["vector", "keyword", "hybrid"]
MODES: tuple[Mode, ...] = ("vector", "keyword", "hybrid")
RRF_K = 60
DEFAULT_KEYWORD_WEIGHT = 0.5


@dataclass(frozen=True)
class SearchOptions:
    """How to search: the mode (None: the datasources' own) and the keyword list's weight."""

    mode: Mode | None = None
    keyword_weight: float = DEFAULT_KEYWORD_WEIGHT


def pick_mode(requested: Mode | None, defaults: Sequence[str]) -> Mode:
    """The mode of a search: the requested one, else the datasources' shared default,
    else (they differ) hybrid."""
    if requested is not None:
        return requested
    distinct = set(defaults)
    if len(distinct) == 1:
        only = distinct.pop()
        for mode in MODES:
            if mode == only:
                return mode
    return "hybrid"


def merge(lists: Sequence[list[Hit]], limit: int) -> list[Hit]:
    """Hits of several datasources as one list, best score first."""
    hits = [h for hits in lists for h in hits]
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits[:limit]


def fuse(vector: list[Hit], keyword: list[Hit], keyword_weight: float, top_k: int) -> list[Hit]:
    """Reciprocal rank fusion of two ranked lists (see the module's docstring)."""
    scores: dict[str, float] = {}
    found: dict[str, Hit] = {}
    for weight, ranked in ((1.0 - keyword_weight, vector), (keyword_weight, keyword)):
        for rank, hit in enumerate(ranked, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight * (RRF_K + 1) / (RRF_K + rank)
            found.setdefault(hit.id, hit)
    order = sorted(scores, key=lambda i: (-scores[i], i))[:top_k]
    return [replace(found[i], score=scores[i]) for i in order]


def as_document(hit: Hit) -> dict[str, Any]:
    """A hit as the engine's documents and the search endpoint show it."""
    return {"id": hit.id, "text": hit.text, "score": round(hit.score, 6), "metadata": hit.metadata}
