"""Evaluations against a real `appforge serve` and a slow model server: killed with SIGKILL
mid-evaluation and restarted on the same home, the server finishes the evaluation with
exactly one result and one succeeded run per case; and `appforge eval --server` cancels
its evaluation on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from waiting import poll_until

from appforge.core.db import make_engine
from appforge.core.settings import Settings
from evals.tables import EvaluationCase
from tests.conftest import ADMIN_TOKEN
from tests.e2e.fake_model import FakeModel, serve_model
from tests.e2e.server_process import ServerProcess

HEADERS = {"Authorization": f"Token {ADMIN_TOKEN}"}
ANSWER = "one two three four five six seven eight"  # streamed a word every 0.1 s
CASES = 6
APP = """\
version: 1
name: Slow
type: text
input:
  q: {type: string, required: true}
steps:
  - id: a
    kind: llm
    model: default
    prompt: {user: "{{ input.q }}"}
output:
  a: "{{ a.text }}"
"""


@pytest.fixture
def model() -> Iterator[FakeModel]:
    with serve_model(FakeModel(default=ANSWER, pause=0.1)) as served:
        yield served


def _env(home: Path, model: FakeModel) -> dict[str, str]:
    return {
        "APPFORGE_HOME": str(home),
        "APPFORGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "APPFORGE_OPENAI__BASE_URL": model.url,
        "APPFORGE_OPENAI__API_KEY": "x",
        "APPFORGE_MODELS": '{"default": "openai:fake"}',
        "APPFORGE_EVALS__POLL_SECONDS": "0.2",
    }


def _cases() -> list[dict[str, Any]]:
    return [{"input": {"q": f"question-{n}"}, "expected": {"a": ANSWER}} for n in range(CASES)]


def _get(base: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{base}{path}", params=params, headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _post(base: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    r = httpx.post(f"{base}{path}", headers={**HEADERS, **(headers or {})}, timeout=30, **kwargs)
    assert r.status_code in (201, 202), r.text
    return r.json()


def _cases_in_database(home: Path) -> dict[str, dict[str, Any]]:
    """The evaluation's cases as the killed server left them, by question."""
    engine = make_engine(Settings(home=home).resolved_database_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(EvaluationCase.input, EvaluationCase.status, EvaluationCase.run_id)
            ).all()
    finally:
        engine.dispose()
    return {r.input["q"]: {"status": r.status, "run_id": r.run_id} for r in rows}


def test_killed_server_finishes_the_evaluation_once_per_case(tmp_path: Path, model: FakeModel):
    home = tmp_path / "home"
    env = _env(home, model)
    first = ServerProcess(env)
    try:
        _post(
            first.base,
            "/api/apps",
            content=APP,
            headers={"Content-Type": "application/yaml"},
        )
        _post(first.base, "/api/datasets", json={"name": "qs"})
        _post(first.base, "/api/datasets/qs/cases", json={"cases": _cases()})
        body = {"dataset": "qs", "app": "Slow", "scorers": [{"type": "equals"}], "concurrency": 2}
        evaluation_id = _post(first.base, "/api/evaluations", json=body)["id"]

        def some_done() -> bool:
            now = _get(first.base, f"/api/evaluations/{evaluation_id}")
            assert now["status"] != "done", "finished before it could be killed"
            return bool(now["cases_done"] >= 1)

        poll_until(some_done, interval=0.05)
    finally:
        first.kill()
    at_kill = _cases_in_database(home)
    done_before = {q: c["run_id"] for q, c in at_kill.items() if c["status"] == "done"}
    assert 0 < len(done_before) < CASES, at_kill

    second = ServerProcess(env)
    try:

        def ended() -> dict[str, Any] | None:
            now: dict[str, Any] = _get(second.base, f"/api/evaluations/{evaluation_id}")
            return now if now["status"] not in ("queued", "running") else None

        info = poll_until(ended, interval=0.2, detail=second.output)
        results = _get(second.base, f"/api/evaluations/{evaluation_id}/results")
        runs = _get(second.base, "/api/runs", app="Slow", limit=200)
    finally:
        second.stop()
    assert (info["status"], info["cases_done"], info["summary"]["pass_rate"]) == ("done", 6, 1.0)
    # Exactly one result per case, each from its own run; the cases done before the
    # kill kept theirs.
    assert sorted(r["input"]["q"] for r in results) == sorted(c["input"]["q"] for c in _cases())
    assert all(r["status"] == "done" and r["passed"] for r in results)
    run_of = {r["input"]["q"]: r["run_id"] for r in results}
    assert {q: run_of[q] for q in done_before} == done_before
    # No case ran twice: one succeeded run per case, the results' runs; the others are
    # the runs the kill interrupted (at most the 2 running at once), each then run again.
    succeeded = [r for r in runs if r["status"] == "succeeded"]
    assert sorted(r["id"] for r in succeeded) == sorted(run_of.values())
    interrupted = [r for r in runs if r["status"] != "succeeded"]
    assert len(interrupted) <= 2
    assert all(r["error_code"] == "INTERRUPTED" for r in interrupted), interrupted
    assert not {r["input_preview"] for r in interrupted} & set(done_before)
    # The model was asked once per succeeded run, and at most once per interrupted one
    # (a kill may come before its request), by these runs alone.
    asked = Counter(body["messages"][-1]["content"] for body in model.requests)
    runs_of = Counter(r["input_preview"] for r in runs)
    assert set(asked) == set(runs_of) == set(run_of)
    assert all(1 <= asked[q] <= runs_of[q] for q in run_of), (asked, runs_of)


def test_cli_eval_on_a_server_cancels_its_evaluation_on_ctrl_c(tmp_path: Path, model: FakeModel):
    server = ServerProcess(_env(tmp_path / "home", model))
    app, cases, scorers = tmp_path / "app.yaml", tmp_path / "qs.jsonl", tmp_path / "s.yaml"
    app.write_text(APP)
    cases.write_text("".join(json.dumps(c) + "\n" for c in _cases()))
    scorers.write_text("- type: equals\n")
    err = tmp_path / "stderr.txt"
    command = [str(Path(sys.executable).parent / "appforge"), "eval", str(app), str(cases)]
    command += ["--scorers", str(scorers), "--server", server.base, "--concurrency", "1"]
    env = {**os.environ, "APPFORGE_TOKEN": ADMIN_TOKEN, "APPFORGE_HOME": str(tmp_path / "cli")}
    with err.open("wb") as stderr:
        # Ctrl-C reaches the CLI even when this suite runs as a background job, whose
        # children start with SIGINT ignored (a shell's rule), and Python keeps it ignored.
        cli = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
        )
    try:

        def running() -> dict[str, Any] | None:
            assert cli.poll() is None, err.read_text()
            found = _get(server.base, "/api/evaluations", dataset="qs")
            return found[0] if found and found[0]["cases_done"] >= 1 else None

        evaluation = poll_until(running, interval=0.1, detail=err.read_text)
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 130, err.read_text()
        after = _get(server.base, f"/api/evaluations/{evaluation['id']}")
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        server.stop()
    assert after["status"] == "cancelled" and 1 <= after["cases_done"] < CASES
    assert f"evaluation {evaluation['id']} cancelled (" in err.read_text()
