"""Extraction of text from every supported format, on real files made here."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from appforge.core.settings import DatasourceSettings
from datasources.errors import ArchiveTooLargeError, EntryTooLargeError, ExtractError
from datasources.extract import Segment, detect, extract, extract_segments
from tests.datasources.support import make_docx, make_docx_bomb, make_pdf, make_zip


def test_extract_plain_text_and_markdown():
    assert extract(b"hello\nworld", "notes.txt") == "hello\nworld"
    md = b"# Title\n\nSome *markdown* text."
    assert "Some *markdown* text." in extract(md, "readme.md")
    assert detect(md, "readme.md") == "text"


def test_extract_html_gives_readable_text_not_tags():
    html = (
        b"<!doctype html><html><head><title>t</title><style>p{color:red}</style>"
        b"<script>var secret = 1;</script></head><body><h1>Refunds</h1>"
        b"<p>Refunds take <b>five</b> days.</p></body></html>"
    )
    text = extract(html, "page.html")
    assert "Refunds" in text and "five" in text
    assert "<" not in text and "secret" not in text and "color" not in text
    assert detect(html) == "html"


def test_extract_pdf_reads_its_text():
    data = make_pdf("Shipping is free above 50 euros.", "Returns are accepted for 30 days.")
    assert detect(data) == "pdf"
    text = extract(data, "policy.pdf")
    assert "Shipping is free above 50 euros." in text
    assert "Returns are accepted for 30 days." in text


def test_extract_csv_as_named_rows():
    data = b"product,price\nlamp,12\nchair,40\n"
    assert extract(data, "prices.csv").splitlines() == [
        "product: lamp; price: 12",
        "product: chair; price: 40",
    ]


def test_extract_json_as_rows():
    data = json.dumps([{"q": "hours?", "a": {"text": "9-5"}}, {"q": "phone?", "a": None}]).encode()
    lines = extract(data, "faq.json").splitlines()
    assert lines == ["q: hours?; a.text: 9-5", "q: phone?; a: None"]


def test_extract_docx_paragraphs_and_tables():
    data = make_docx("Warranty lasts two years.", table=[["part", "years"], ["motor", "5"]])
    assert detect(data) == "docx"
    text = extract(data, "warranty.docx")
    assert "Warranty lasts two years." in text
    assert "motor | 5" in text


def test_extract_media_type_wins_over_name():
    assert detect(b"<p>x</p>", "x.txt", "text/html; charset=utf-8") == "html"


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"%PDF-1.4 broken", "x.pdf", "pdf"),
        (b"\xff\xfe\x00binary", "x.bin", "UTF-8"),
        (b"   \n ", "x.txt", "no text"),
        (b"{not json", "x.json", "invalid JSON"),
    ],
)
def test_extract_broken_or_empty_documents_fail_clearly(data: bytes, name: str, message: str):
    with pytest.raises(ExtractError) as info:
        extract(data, name)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"hello\x00 world", "x.txt", [Segment("hello world")]),
        (b"# Ti\x00tle\n\nbo\x00dy", "x.md", [Segment("# Title\n\nbody", section="Title")]),
        (b"<h1>Ti\x00tle</h1><p>bo\x00dy</p>", "x.html", [Segment("Title\nbody", section="Title")]),
        (b'{"a": "x\\u0000y\\ud800z"}', "x.json", [Segment("a: xyz")]),
    ],
)
def test_extract_drops_characters_no_store_keeps(data: bytes, name: str, expected: list[Segment]):
    # PostgreSQL's text columns refuse NUL: one in a file failed the whole entry there.
    assert extract_segments(data, name) == expected


@pytest.mark.parametrize("name", ["x.txt", "x.md"])
def test_extract_a_document_of_nothing_but_nul_has_no_text(name: str):
    with pytest.raises(ExtractError, match="has no text"):
        extract_segments(b"\x00\x00\n\x00", name)


# --- limits: zip bombs, PDF streams, text size --------------------------------------------


def test_extract_docx_zip_bomb_is_refused_before_parsing():
    bomb = make_docx_bomb(40 * 1024 * 1024)  # 40 MiB of paragraphs in about 150 KB
    assert len(bomb) < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveTooLargeError) as info:
            extract(bomb, "bomb.docx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == "ARCHIVE_TOO_LARGE"
    assert "MAX_UNCOMPRESSED_BYTES" in info.value.message
    assert peak < 5 * 1024 * 1024  # never expanded


def test_extract_docx_refuses_a_high_compression_ratio():
    bomb = make_docx_bomb(3 * 1024 * 1024)  # under the size limit, but expands 300x
    with pytest.raises(ArchiveTooLargeError, match="MAX_COMPRESSION_RATIO"):
        extract(bomb, "bomb.docx")
    # Allowed with a laxer ratio: the same document is read.
    lax = DatasourceSettings(max_compression_ratio=1000)
    assert extract(bomb, "bomb.docx", settings=lax).startswith("bomb bomb")


def test_extract_docx_limit_holds_for_all_members_together():
    settings = DatasourceSettings(max_uncompressed_bytes=2 * 1024 * 1024)
    data = make_docx_bomb(700 * 1024, extra_members=3)  # four members of 700 KiB each
    with pytest.raises(ArchiveTooLargeError, match="expands to more than 2097152 bytes"):
        extract(data, "many.docx", settings=settings)


def test_extract_docx_member_lying_about_its_size_is_not_expanded():
    bomb = make_docx_bomb(40 * 1024 * 1024)
    entry = bomb.rindex(b"PK\x01\x02")  # the last central directory entry: document.xml
    assert bomb[entry + 46 : entry + 46 + 17] == b"word/document.xml"
    # Its declared uncompressed size (offset 24) says 1000 bytes.
    lying = bomb[: entry + 24] + (1000).to_bytes(4, "little") + bomb[entry + 28 :]
    tracemalloc.start()
    try:
        with pytest.raises(ExtractError):
            extract(lying, "liar.docx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024


def test_extract_zip_with_too_many_members_is_refused():
    data = make_zip(50)
    settings = DatasourceSettings(max_archive_members=10)
    for name in ("x.docx", None):  # by name, and sniffed
        with pytest.raises(ArchiveTooLargeError, match="50 members"):
            extract(data, name, settings=settings)
    with pytest.raises(ExtractError):  # within the limit: an (empty) document, read as such
        extract(data, "x.docx")


def test_extract_pdf_stream_over_the_limit_is_refused():
    data = make_pdf("Every word here is part of one long paragraph. " * 60)
    settings = DatasourceSettings(max_uncompressed_bytes=1024)
    with pytest.raises(ArchiveTooLargeError, match="PDF"):
        extract(data, "long.pdf", settings=settings)
    assert "one long paragraph" in extract(data, "long.pdf")


@pytest.mark.parametrize("name", ["big.txt", "big.pdf"])
def test_extract_text_over_the_limit_is_refused(name: str):
    words = "many words of text " * 200
    data = words.encode() if name.endswith(".txt") else make_pdf(words, words)
    settings = DatasourceSettings(max_text_chars=1000)
    with pytest.raises(EntryTooLargeError, match="MAX_TEXT_CHARS") as info:
        extract(data, name, settings=settings)
    assert info.value.code == "ENTRY_TOO_LARGE"
