"""Split an entry's text into overlapping chunks (langchain-text-splitters).

An entry's text comes as segments (:class:`datasources.extract.Segment`): the
pages of a PDF, the sections of an HTML or Markdown document, or one piece.
Chunks never cross a section: each section is split on its own. Pages are
split together, so a chunk may run over a page break; it then says which pages
it spans. Each chunk carries what it knows as metadata:

- ``page``: the (1-based) page it starts on; ``pages``: ``"3"`` or ``"3-4"``;
- ``section``: the heading path it is under, ``"Install > On Linux"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from datasources.errors import EntryTooLargeError
from datasources.extract import Segment

_JOIN = "\n\n"


@dataclass(frozen=True)
class Piece:
    """One chunk: its text and the metadata its place in the document gives it."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _splitter(size: int, overlap: int) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        chunk_size=size,
        chunk_overlap=min(overlap, size // 2),
        separators=["\n\n", "\n", ". ", " ", ""],
        keep_separator="end",
        strip_whitespace=True,
        add_start_index=True,
    )


def split(text: str, size: int, overlap: int) -> list[str]:
    """Chunks of at most ``size`` characters, neighbours sharing up to ``overlap``.

    Splits on paragraphs, then lines, then sentences and words, so chunks end
    at natural boundaries where they can.
    """
    return [p.text for p in split_segments([Segment(text)], size, overlap)]


def split_segments(segments: list[Segment], size: int, overlap: int) -> list[Piece]:
    """The chunks of a document's segments, in order, with their page and section."""
    splitter = _splitter(size, overlap)
    pieces: list[Piece] = []
    for section, group in groupby(segments, key=lambda s: s.section):
        parts = [s for s in group if s.text.strip()]
        if not parts:
            continue
        text, spans = _joined(parts)
        for document in splitter.create_documents([text]):
            chunk = document.page_content
            if not chunk.strip():
                continue
            start = int(document.metadata.get("start_index", -1))
            meta = _pages(spans, start, start + len(chunk)) if start >= 0 else {}
            if section:
                meta["section"] = section
            pieces.append(Piece(chunk, meta))
    return pieces


def split_within(segments: list[Segment], size: int, overlap: int, limit: int) -> list[Piece]:
    """:func:`split_segments`, refusing a text that makes more than ``limit`` chunks
    (:class:`EntryTooLargeError`); one too long for them is refused before splitting."""
    length = sum(len(s.text) for s in segments)  # no chunk holds more than ``size``
    chunks = [] if length > limit * size else split_segments(segments, size, overlap)
    if length > limit * size or len(chunks) > limit:
        raise EntryTooLargeError(
            f"the entry makes more than {limit} chunks "
            "(APPFORGE_DATASOURCES__MAX_CHUNKS_PER_ENTRY)",
            details={"limit": limit},
        )
    return chunks


def _joined(parts: list[Segment]) -> tuple[str, list[tuple[int, int, int | None]]]:
    """The parts' texts joined, and each part's (start, end, page) in it."""
    spans: list[tuple[int, int, int | None]] = []
    offset = 0
    for part in parts:
        spans.append((offset, offset + len(part.text), part.page))
        offset += len(part.text) + len(_JOIN)
    return _JOIN.join(p.text for p in parts), spans


def _pages(spans: list[tuple[int, int, int | None]], start: int, end: int) -> dict[str, Any]:
    pages = [page for s, e, page in spans if page is not None and s < end and e > start]
    if not pages:
        return {}
    first, last = min(pages), max(pages)
    return {"page": first, "pages": str(first) if first == last else f"{first}-{last}"}
