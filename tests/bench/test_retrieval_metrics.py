"""The retrieval benchmark's arithmetic (bench/retrieval.py); the benchmark itself is
not run by the suite: it needs the PostgreSQL manual and minutes of embedding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.retrieval import (
    ALL,
    KINDS,
    QUESTIONS,
    Ingested,
    Question,
    Result,
    Scores,
    by_kind,
    listed_pages,
    load_questions,
    pick_pages,
    rank,
)

PAGES_300 = QUESTIONS.with_name("retrieval_pages_300.txt")


def test_rank_is_the_first_position_of_any_answering_page():
    sources = ["a.html", None, "b.html", "c.html", "b.html"]
    assert rank(sources, ("c.html", "b.html")) == 3
    assert rank(sources, ("a.html",)) == 1
    assert rank(sources, ("z.html",)) == 0
    assert rank([], ("a.html",)) == 0


def test_recall_and_mrr_count_unanswered_questions_as_misses():
    scores = Scores((1, 3, 0, 6, 5))
    assert scores.recall(1) == pytest.approx(1 / 5)
    assert scores.recall(5) == pytest.approx(3 / 5)
    assert scores.recall(10) == pytest.approx(4 / 5)
    assert scores.mrr == pytest.approx((1 + 1 / 3 + 1 / 6 + 1 / 5) / 5)
    assert Scores((0, 0)).mrr == 0


def test_questions_name_their_pages_once_and_other_answers_after():
    rows = json.loads(QUESTIONS.read_text())
    assert len(rows) >= 60
    assert len({r["question"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row) <= {"question", "kind", "page", "also"}, row
        assert row["kind"] in KINDS, row
        assert row["page"] not in row.get("also", []), row
    questions = load_questions(QUESTIONS)
    assert [q.pages[0] for q in questions] == [r["page"] for r in rows]
    assert [q.kind for q in questions] == [r["kind"] for r in rows]
    assert sum(q.kind == "exact-term" for q in questions) >= 30
    assert sum(q.kind == "paraphrase" for q in questions) >= 60
    assert len(load_questions(QUESTIONS, limit=5)) == 5


def test_a_question_without_a_known_kind_is_refused(tmp_path: Path):
    path = tmp_path / "questions.json"
    path.write_text(json.dumps([{"question": "q?", "page": "a.html"}]))
    with pytest.raises(SystemExit, match="kind"):
        load_questions(path)
    path.write_text(json.dumps([{"question": "q?", "kind": "vague", "page": "a.html"}]))
    with pytest.raises(SystemExit, match="kind"):
        load_questions(path)


def test_scores_split_by_kind_in_question_order_then_over_all():
    questions = [
        Question("a", ("a.html",), "exact-term"),
        Question("b", ("b.html",), "paraphrase"),
        Question("c", ("c.html",), "exact-term"),
        Question("d", ("d.html",), "paraphrase"),
    ]
    split = by_kind(questions, Scores((1, 0, 7, 2)))
    assert list(split) == ["paraphrase", "exact-term", ALL]
    assert split["paraphrase"].ranks == (0, 2)
    assert split["exact-term"].ranks == (1, 7)
    assert split[ALL].ranks == (1, 0, 7, 2)
    only = by_kind(questions[1::2], Scores((3, 4)))
    assert list(only) == ["paraphrase", ALL]


def test_result_rows_and_hybrid_gain_per_kind():
    questions = tuple(
        Question(f"q{i}", ("p.html",), "paraphrase" if i < 4 else "exact-term") for i in range(8)
    )
    vector = Scores((1, 1, 2, 6, 1, 0, 0, 3))  # recall@5: paraphrase 3/4, exact-term 2/4
    hybrid = Scores((1, 1, 2, 4, 1, 2, 0, 3))  # paraphrase 4/4, exact-term 3/4
    keyword = Scores((0,) * 8)
    ingested = Ingested(
        pages=2, chunks=3, seconds=1.0, over_window=0.0, embedded=3, cpu_seconds=1.0
    )
    result = Result(
        1000, ingested, {"vector": vector, "keyword": keyword, "hybrid": hybrid}, questions
    )
    rows = [(mode, kind, len(s.ranks)) for mode, kind, s in result.rows()]
    assert rows == [
        (mode, kind, n)
        for mode in ("vector", "keyword", "hybrid")
        for kind, n in (("paraphrase", 4), ("exact-term", 4), (ALL, 8))
    ]
    gains = result.gains()
    assert gains["paraphrase"] == pytest.approx((4 / 4) / (3 / 4) - 1)
    assert gains["exact-term"] == pytest.approx((3 / 4) / (2 / 4) - 1)
    assert gains[ALL] == pytest.approx((7 / 8) / (5 / 8) - 1)
    no_vector = Result(1000, ingested, {"keyword": keyword}, questions)
    assert no_vector.gains() == {}
    missed = Result(1000, ingested, {"vector": keyword, "hybrid": hybrid}, questions)
    assert missed.gains() == {}  # vector answers nothing: no ratio


def test_pick_pages_takes_every_labelled_page_then_spreads_the_others(tmp_path: Path):
    for name in [f"p{i:02d}.html" for i in range(20)]:
        (tmp_path / name).write_text("<p>x</p>")
    (tmp_path / "notes.txt").write_text("not a page")
    questions = [Question("q?", ("p07.html", "p03.html"))]
    picked = [p.name for p in pick_pages(tmp_path, questions, 6)]
    assert picked == ["p03.html", "p07.html", "p00.html", "p05.html", "p11.html", "p15.html"]
    assert len(pick_pages(tmp_path, questions, 100)) == 20
    assert [p.name for p in pick_pages(tmp_path, questions, 1)] == ["p03.html", "p07.html"]
    with pytest.raises(SystemExit, match="not found"):
        pick_pages(tmp_path, [Question("q?", ("gone.html",))], 5)


def test_listed_pages_are_ingested_as_listed_and_must_hold_every_question_page(tmp_path: Path):
    for name in ("a.html", "b.html", "c.html"):
        (tmp_path / name).write_text("<p>x</p>")
    listing = tmp_path / "pages.txt"
    listing.write_text("c.html\n\na.html\nc.html\n")
    asked = [Question("q?", ("a.html",))]
    assert [p.name for p in listed_pages(tmp_path, asked, listing)] == ["c.html", "a.html"]
    with pytest.raises(SystemExit, match="b.html"):
        listed_pages(tmp_path, [Question("q?", ("a.html", "b.html"))], listing)
    listing.write_text("a.html\ngone.html\n")
    with pytest.raises(SystemExit, match="not found"):
        listed_pages(tmp_path, asked, listing)


def test_the_300_page_list_holds_every_page_a_question_names():
    listed = set(PAGES_300.read_text().split())
    assert len(listed) == 300
    assert {p for q in load_questions(QUESTIONS) for p in q.pages} <= listed
