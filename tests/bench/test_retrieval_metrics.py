"""The retrieval benchmark's arithmetic (bench/retrieval.py); the benchmark itself is
not run by the suite: it needs the PostgreSQL manual and minutes of embedding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.retrieval import QUESTIONS, Question, Scores, load_questions, pick_pages, rank


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
        assert set(row) <= {"question", "page", "also"}, row
        assert row["page"] not in row.get("also", []), row
    questions = load_questions(QUESTIONS)
    assert [q.pages[0] for q in questions] == [r["page"] for r in rows]
    assert len(load_questions(QUESTIONS, limit=5)) == 5


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
