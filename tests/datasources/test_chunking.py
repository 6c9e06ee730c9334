"""Segments and chunks: PDF pages, HTML and Markdown sections, chunks that say where
they are."""

from __future__ import annotations

from datasources.chunking import split, split_segments
from datasources.extract import Segment, extract_segments, markdown_sections


def test_markdown_sections_follow_the_heading_path_and_skip_code_fences():
    text = (
        "Intro line.\n# Guide\nStart here.\n## Install ##\nRun it.\n"
        "```sh\n# a comment, not a heading\n```\n### On Linux\napt install\n## Use\nGo.\n"
    )
    sections = markdown_sections(text)
    assert [s.section for s in sections] == [
        None,
        "Guide",
        "Guide > Install",
        "Guide > Install > On Linux",
        "Guide > Use",
    ]
    assert "# a comment, not a heading" in sections[2].text
    assert markdown_sections("no headings at all") == [Segment("no headings at all")]


def test_html_sections_and_pdf_pages_as_segments():
    html = (
        b"<html><head><title>T</title></head><body><p>Before.</p><h1>A</h1><p>One.</p>"
        b"<h2>B <em>b</em></h2><p>Two.</p><h1>C</h1><p>Three.</p></body></html>"
    )
    segments = extract_segments(html, "page.html")
    assert [(s.section, s.text) for s in segments] == [
        (None, "Before."),
        ("A", "A\nOne."),
        ("A > B b", "B b\nTwo."),
        ("C", "C\nThree."),
    ]
    assert extract_segments(b"plain", "notes.txt") == [Segment("plain")]


def test_chunks_never_cross_sections_and_say_which_pages_they_span():
    pages = [Segment("a" * 30, page=1), Segment("b" * 30, page=2), Segment("c " * 60, page=3)]
    pieces = split_segments(pages, 70, 0)
    assert pieces[0].metadata == {"page": 1, "pages": "1-2"}
    assert all(p.metadata["page"] == 3 for p in pieces[1:])
    assert {p.metadata["pages"] for p in pieces[1:]} == {"3"}
    sections = [Segment("x " * 10, section="S1"), Segment("y " * 10, section="S2")]
    assert [(p.text[0], p.metadata) for p in split_segments(sections, 1000, 0)] == [
        ("x", {"section": "S1"}),
        ("y", {"section": "S2"}),
    ]
    assert split("one two three", 1000, 0) == ["one two three"]
