"""Text from an entry's bytes: plain text, Markdown, HTML, PDF, CSV, JSON, DOCX.

:func:`extract` gives the whole text; :func:`extract_segments` gives it in
parts that know where they are: a PDF's pages, the heading sections of HTML
and Markdown (which the chunks then carry as ``page`` and ``section``).

The format is chosen from the media type when it names one, else from the file
name's suffix, else by sniffing (``%PDF-``, a ZIP with ``word/document.xml``,
a leading ``<``); anything else must be UTF-8 text.

Limits (``DatasourceSettings``): a DOCX passes the zip-bomb guard
(``datasources.archive``) before python-docx sees it; PDF streams are
decompressed by pypdf under ``max_uncompressed_bytes`` (``ARCHIVE_TOO_LARGE``);
the text read is at most ``max_text_chars`` (``ENTRY_TOO_LARGE``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

from appforge.core.settings import DatasourceSettings
from appforge.core.values import storable_text
from datasources.archive import check_members, check_zip
from datasources.errors import ArchiveTooLargeError, EntryTooLargeError, ExtractError

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
_T = TypeVar("_T")
# Elements whose text is not part of what a reader sees.
_HIDDEN = ("script", "style", "noscript", "template", "head", "svg", "iframe")


def detect(
    data: bytes,
    name: str | None = None,
    media_type: str | None = None,
    settings: DatasourceSettings | None = None,
) -> str:
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
    if head.startswith(b"PK") and _is_docx(data, settings or DatasourceSettings()):
        return "docx"
    if head[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


@dataclass(frozen=True)
class Segment:
    """A part of a document's text: a PDF page (``page``, from 1), an HTML or Markdown
    section (``section``, its heading path ``"A > B"``), or the whole text."""

    text: str
    page: int | None = None
    section: str | None = None


def extract_segments(
    data: bytes,
    name: str | None = None,
    media_type: str | None = None,
    settings: DatasourceSettings | None = None,
) -> list[Segment]:
    """The readable text of ``data`` as segments: a PDF's pages, the sections of an HTML
    or Markdown document, else one segment. Fails like :func:`extract`."""
    limits = settings or DatasourceSettings()
    kind = detect(data, name, media_type, limits)
    if kind == "pdf":
        pages = _read(kind, lambda: _pdf_pages(data, limits))
        segments = [Segment(t, page=n) for n, t in enumerate(pages, start=1) if t]
    elif kind == "html":
        segments = _read(kind, lambda: _html_sections(data))
    elif kind == "text" and _is_markdown(name, media_type):
        segments = markdown_sections(_decode(data))
    else:
        return [Segment(extract(data, name, media_type, limits))]
    segments = [
        Segment(storable_text(s.text), s.page, s.section and storable_text(s.section))
        for s in segments
    ]
    if not any(s.text.strip() for s in segments):
        raise ExtractError(f"the {kind} document has no text")
    check_text_size(sum(len(s.text) for s in segments), limits)
    return segments


def _read(kind: str, read: Callable[[], _T]) -> _T:
    try:
        return read()
    except (ExtractError, EntryTooLargeError):
        raise
    except Exception as exc:  # each parser raises its own types on broken input
        raise ExtractError(f"could not read the {kind} document: {exc}") from exc


def _is_markdown(name: str | None, media_type: str | None) -> bool:
    media = (media_type or "").split(";")[0].strip().lower()
    suffix = PurePosixPath(name or "").suffix.lower()
    return media in ("text/markdown", "text/x-markdown") or suffix in (".md", ".markdown")


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def markdown_sections(text: str) -> list[Segment]:
    """Markdown text cut at its ATX headings (``#`` to ``######``, not inside code
    fences); each part's ``section`` is its heading path."""
    segments: list[Segment] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    fence = ""

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            segments.append(Segment(body, section=" > ".join(t for _, t in path) or None))
        lines.clear()

    for line in text.splitlines():
        opened = _FENCE.match(line)
        if opened and (not fence or opened.group(1)[0] == fence[0]):
            fence = "" if fence else opened.group(1)
        heading = None if fence else _ATX.match(line)
        if heading:
            flush()
            level, title = len(heading.group(1)), heading.group(2).strip()
            path = [p for p in path if p[0] < level] + ([(level, title)] if title else [])
        lines.append(line)
    flush()
    return segments


def extract(
    data: bytes,
    name: str | None = None,
    media_type: str | None = None,
    settings: DatasourceSettings | None = None,
) -> str:
    """The readable text of ``data``; :class:`ExtractError` if there is none or it is broken,
    :class:`EntryTooLargeError` (or ``ArchiveTooLargeError``) if it is over a limit."""
    limits = settings or DatasourceSettings()
    kind = detect(data, name, media_type, limits)
    try:
        if kind == "docx":
            check_zip(data, limits)
        text = _pdf(data, limits) if kind == "pdf" else _EXTRACTORS[kind](data)
    except (ExtractError, EntryTooLargeError):
        raise
    except Exception as exc:  # each parser raises its own types on broken input
        raise ExtractError(f"could not read the {kind} document: {exc}") from exc
    text = storable_text(text).strip()
    if not text:
        raise ExtractError(f"the {kind} document has no text")
    check_text_size(len(text), limits)
    return text


def check_text_size(chars: int, settings: DatasourceSettings) -> None:
    """Refuse an entry whose text is over ``max_text_chars``."""
    if chars > settings.max_text_chars:
        raise EntryTooLargeError(
            f"the entry's text is over {settings.max_text_chars} characters "
            "(APPFORGE_DATASOURCES__MAX_TEXT_CHARS)",
            details={"limit": settings.max_text_chars},
        )


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractError("the document is not UTF-8 text (and no known binary format)") from exc


def _text(data: bytes) -> str:
    return _decode(data)


_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def _html_sections(data: bytes) -> list[Segment]:
    """An HTML page's visible text cut at its headings (``h1``-``h6``)."""
    from bs4 import BeautifulSoup, NavigableString, Tag
    from bs4.element import PreformattedString

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(_HIDDEN):
        tag.decompose()
    segments: list[Segment] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []

    def flush() -> None:
        if lines:
            section = " > ".join(t for _, t in path) or None
            segments.append(Segment("\n".join(lines), section=section))
        lines.clear()

    for node in soup.descendants:
        if isinstance(node, Tag) and node.name in _HEADINGS:
            flush()
            level, title = int(node.name[1]), node.get_text(" ", strip=True)
            path = [p for p in path if p[0] < level] + ([(level, title)] if title else [])
            if title:
                lines.append(title)
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            if any(p.name in _HEADINGS for p in node.parents):
                continue  # read with its heading
            lines.extend(line.strip() for line in node.splitlines() if line.strip())
    flush()
    return segments


def _html(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(_HIDDEN):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(data: bytes, settings: DatasourceSettings) -> str:
    return "\n\n".join(_pdf_pages(data, settings))


def _pdf_pages(data: bytes, settings: DatasourceSettings) -> list[str]:
    """The text of each page of a PDF, in order."""
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import LimitReachedError

    limit = settings.max_uncompressed_bytes
    # pypdf's own limits, for this thread only (a context variable): every filter's
    # output, a stream's declared length and the decoding work per stream.
    bounded = apply_configuration(
        maximum_declared_stream_length=limit,
        array_based_stream_maximum_output_length=limit,
        jbig2_maximum_output_length=limit,
        lzw_maximum_output_length=limit,
        run_length_maximum_output_length=limit,
        zlib_maximum_output_length=limit,
        brotli_maximum_output_length=limit,
        image_maximum_buffer_size=limit,
        stream_decoding_work_maximum_length=4 * limit,
        xfa_decoding_work_maximum_length=4 * limit,
    )
    pages: list[str] = []
    chars = 0
    try:
        with bounded:
            for page in PdfReader(io.BytesIO(data)).pages:
                pages.append((page.extract_text() or "").strip())
                chars += len(pages[-1])
                check_text_size(chars, settings)  # stop reading pages once over
    except LimitReachedError as exc:
        raise ArchiveTooLargeError(
            f"a compressed stream of the PDF expands past the limit of {limit} bytes "
            f"(APPFORGE_DATASOURCES__MAX_UNCOMPRESSED_BYTES): {exc}",
            details={"limit": limit},
        ) from exc
    return pages


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


def _is_docx(data: bytes, settings: DatasourceSettings) -> bool:
    check_members(data, settings)  # before the central directory is read
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


_EXTRACTORS = {
    "text": _text,
    "html": _html,
    "csv": _csv,
    "json": _json,
    "docx": _docx,
}
