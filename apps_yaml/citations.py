"""Numbered documents and the citations an answer makes of them.

Every document a run's retrieve steps return gets a number ``n`` (1, 2, ...
through the whole run), which a prompt shows beside it (``[{{ d.n }}]``). An
answer that writes ``[2]``, ``[1, 3]`` or ``[1][3]`` cites those documents:
:meth:`Numbering.cited` maps each number it wrote, in the order first written,
back to the document (chunk id, source, page, section, score). Numbers that
name no document are left out.
"""

from __future__ import annotations

import re
from typing import Any

_MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*,\s*\d{1,4})*)\s*\]")


def markers(text: str) -> list[int]:
    """The numbers written in ``[n]`` markers, in order, each once."""
    seen: dict[int, None] = {}
    for match in _MARKER.finditer(text):
        for part in match.group(1).split(","):
            seen.setdefault(int(part), None)
    return list(seen)


class Numbering:
    """The documents of one run by number."""

    def __init__(self) -> None:
        self.documents: dict[int, dict[str, Any]] = {}

    def number(self, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents, each with its number ``n`` (following the run's earlier ones)."""
        numbered = []
        for doc in documents:
            n = len(self.documents) + 1
            self.documents[n] = {"n": n, **doc}
            numbered.append(self.documents[n])
        return numbered

    def cited(self, text: str) -> list[dict[str, Any]]:
        """The documents ``text`` cites, in the order it first cites them."""
        out = []
        for n in markers(text):
            doc = self.documents.get(n)
            if doc is None:
                continue
            meta = doc.get("metadata") or {}
            out.append(
                {
                    "n": n,
                    "id": doc.get("id"),
                    "source": meta.get("source"),
                    "page": meta.get("page"),
                    "section": meta.get("section"),
                    "score": doc.get("score"),
                }
            )
        return out
