"""Split an entry's text into overlapping chunks (langchain-text-splitters)."""

from __future__ import annotations

from langchain_text_splitters import RecursiveCharacterTextSplitter


def split(text: str, size: int, overlap: int) -> list[str]:
    """Chunks of at most ``size`` characters, neighbours sharing up to ``overlap``.

    Splits on paragraphs, then lines, then sentences and words, so chunks end
    at natural boundaries where they can.
    """
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=size,
        chunk_overlap=min(overlap, size // 2),
        separators=["\n\n", "\n", ". ", " ", ""],
        keep_separator="end",
        strip_whitespace=True,
    )
    return [chunk for chunk in splitter.split_text(text) if chunk.strip()]
