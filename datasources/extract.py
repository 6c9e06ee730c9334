"""Text from an entry's bytes: plain text, Markdown, HTML, PDF, CSV, JSON, DOCX.

The format is chosen from the media type when it names one, else from the file
name's suffix, else by sniffing (``%PDF-``, a ZIP with ``word/document.xml``,
a leading ``<``); anything else must be UTF-8 text.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import PurePosixPath
from typing import Any

from datasources.errors import ExtractError

_BY_MEDIA = {
    "text/plain": "text",
    "text/markdown": "text",
    "text/x-markdown": "text",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/json": "json",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}
_BY_SUFFIX = {
    ".txt": "text",
    ".md": "text",
    ".markdown": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".csv": "csv",
    ".json": "json",
    ".docx": "docx",
}
# Elements whose text is not part of what a reader sees.
_HIDDEN = ("script", "style", "noscript", "template", "head", "svg", "iframe")


def detect(data: bytes, name: str | None = None, media_type: str | None = None) -> str:
    """The format of ``data``: text, html, pdf, csv, json or docx."""
    media = (media_type or "").split(";")[0].strip().lower()
    if media in _BY_MEDIA:
        return _BY_MEDIA[media]
    suffix = PurePosixPath(name or "").suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    head = data[:512].lstrip()
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK") and _is_docx(data):
        return "docx"
    if head[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def extract(data: bytes, name: str | None = None, media_type: str | None = None) -> str:
    """The readable text of ``data``; :class:`ExtractError` if there is none or it is broken."""
    kind = detect(data, name, media_type)
    try:
        text = _EXTRACTORS[kind](data)
    except ExtractError:
        raise
    except Exception as exc:  # each parser raises its own types on broken input
        raise ExtractError(f"could not read the {kind} document: {exc}") from exc
    text = text.strip()
    if not text:
        raise ExtractError(f"the {kind} document has no text")
    return text


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractError("the document is not UTF-8 text (and no known binary format)") from exc


def _text(data: bytes) -> str:
    return _decode(data)


def _html(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(_HIDDEN):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)


def _csv(data: bytes) -> str:
    rows = list(csv.reader(io.StringIO(_decode(data))))
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    if not body:
        return ", ".join(header)
    # One line per row, each value named by its column: readable out of context.
    return "\n".join(
        "; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v.strip())
        for row in body
    )


def _json(data: bytes) -> str:
    try:
        value = json.loads(_decode(data))
    except json.JSONDecodeError as exc:
        raise ExtractError(f"invalid JSON: {exc.msg} at line {exc.lineno}") from exc
    items = value if isinstance(value, list) else [value]
    return "\n".join(_json_row(item) for item in items)


def _json_row(value: Any, prefix: str = "") -> str:
    if isinstance(value, dict):
        parts = [_json_row(v, f"{prefix}{k}.") for k, v in value.items()]
        return "; ".join(p for p in parts if p)
    if isinstance(value, list):
        return "; ".join(_json_row(v, prefix) for v in value)
    label = prefix[:-1]
    return f"{label}: {value}" if label else str(value)


def _docx(data: bytes) -> str:
    import docx

    document = docx.Document(io.BytesIO(data))
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(parts)


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


_EXTRACTORS = {
    "text": _text,
    "html": _html,
    "pdf": _pdf,
    "csv": _csv,
    "json": _json,
    "docx": _docx,
}
