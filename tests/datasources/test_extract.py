"""Extraction of text from every supported format, on real files made here."""

from __future__ import annotations

import json

import pytest

from datasources.errors import ExtractError
from datasources.extract import detect, extract
from tests.datasources.support import make_docx, make_pdf


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
