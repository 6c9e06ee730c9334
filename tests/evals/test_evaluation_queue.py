"""The evaluation queue across crashes, on SQLite and PostgreSQL: a case claimed by a
worker that died is finished by another, exactly one result per case; a case whose run
ended before the crash is scored from that run, not run again; a worker that lost its
claim writes nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai_edge import EdgeServer, Reply, serve_edge, sse_chunk
from sqlalchemy import func, select, update

from appforge.core.db import transaction, utcnow
from appforge.core.settings import OpenAISettings, Settings
from evals.queue import EvaluationQueue
from evals.tables import EvaluationCase
from runs.service import RunRequest
from runs.tables import Run
from tests.evals.support import state

APP = """\
version: 1
name: Capital
type: text
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    model: edge
    prompt: {user: "{{ input.question }}"}
output:
  answer: "{{ answer.text }}"
"""


@pytest.fixture
def edge() -> Iterator[EdgeServer]:
    with serve_edge() as server:
        usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        frames = [sse_chunk("Paris", None), sse_chunk(None, "stop"), sse_chunk(None, None, usage)]
        server.replies = [Reply(200, None, sse=frames)]
        yield server


@pytest.fixture
def api(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    edge: EdgeServer,
) -> TestClient:
    settings = make_settings(
        database_url=backend,
        openai=OpenAISettings(base_url=edge.url),
        models={"default": "local:smollm2", "edge": "openai:gpt-test"},
        evals={"workers": 0},
    )
    client = make_client(settings)
    assert client.post("/api/apps", content=APP, headers={"Content-Type": "application/yaml"})
    client.post("/api/datasets", json={"name": "qs"})
    cases = [{"input": {"question": f"q{i}"}, "expected": {"answer": "Paris"}} for i in range(3)]
    assert client.post("/api/datasets/qs/cases", json={"cases": cases}).status_code == 201
    return client


def _start(client: TestClient) -> str:
    body = {"dataset": "qs", "app": "Capital", "scorers": [{"type": "equals"}], "concurrency": 3}
    r = client.post("/api/evaluations", json=body)
    assert r.status_code == 202, r.text
    evaluation_id: str = r.json()["id"]
    return evaluation_id


def _runs(client: TestClient) -> int:
    with state(client).db() as db:
        return int(db.scalar(select(func.count()).select_from(Run)) or 0)


def _results(client: TestClient, evaluation_id: str) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = client.get(f"/api/evaluations/{evaluation_id}/results").json()
    return body


def test_queue_a_dead_workers_cases_are_finished_once(api: TestClient, edge: EdgeServer):
    evaluation_id = _start(api)
    live: EvaluationQueue = state(api).evaluations
    # A worker of a process that died (its row is not in ``processes``) held one case,
    # and a worker whose lease ran out held another.
    second = EvaluationQueue(state(api).runs).claim()
    dead = EvaluationQueue(state(api).runs, process_id="0" * 36)
    first = dead.claim()
    assert first is not None and second is not None and first.id != second.id
    with transaction(state(api).db) as db:
        db.execute(
            update(EvaluationCase)
            .where(EvaluationCase.id == second.id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    worked = 0
    while live.run_once():
        worked += 1
    assert worked == 3
    results = _results(api, evaluation_id)
    assert [r["status"] for r in results] == ["done"] * 3
    assert len({r["run_id"] for r in results}) == 3 and all(r["passed"] for r in results)
    assert api.get(f"/api/evaluations/{evaluation_id}").json()["status"] == "done"
    # The dead worker wakes up and runs its case: its claim is gone, it writes nothing.
    dead.work(first)
    assert _results(api, evaluation_id) == results
    with state(api).db() as db:
        attempts = db.scalar(select(EvaluationCase.attempts).where(EvaluationCase.id == first.id))
    assert attempts == 2


def test_queue_a_run_that_ended_before_the_crash_is_not_run_again(
    api: TestClient, edge: EdgeServer
):
    evaluation_id = _start(api)
    dead = EvaluationQueue(state(api).runs, process_id="0" * 36)
    case = dead.claim()
    assert case is not None
    plan = dead._plan(evaluation_id)
    assert plan is not None and case.run_id is not None
    # It ran the case under the run id its claim noted (the run is stored), then died
    # before writing the result.
    request = RunRequest(plan.app_uuid, case.input, caller=plan.caller, run_id=case.run_id)
    finished = state(api).runs.run(request, threading.Event(), None)
    assert finished.status == "succeeded"
    runs, calls = _runs(api), len(edge.requests)
    live: EvaluationQueue = state(api).evaluations
    while live.run_once():
        pass
    assert _runs(api) == runs + 2 and len(edge.requests) == calls + 2  # only the other two
    results = _results(api, evaluation_id)
    assert [r["status"] for r in results] == ["done"] * 3
    assert finished.run.run_id in [r["run_id"] for r in results]


def test_queue_concurrency_caps_the_cases_claimed_at_once(api: TestClient):
    r = api.post(
        "/api/evaluations",
        json={"dataset": "qs", "app": "Capital", "scorers": [{"type": "equals"}], "concurrency": 2},
    )
    queue: EvaluationQueue = state(api).evaluations
    held = [queue.claim(), queue.claim()]
    assert all(c is not None and c.evaluation_id == r.json()["id"] for c in held)
    assert queue.claim() is None  # two of its cases are running: the third waits
    for case in held:
        assert case is not None
        queue.work(case)
    assert queue.run_once() and not queue.run_once()
    assert api.get(f"/api/evaluations/{r.json()['id']}").json()["cases_done"] == 3


def test_queue_gives_a_case_up_after_its_worker_died_three_times(api: TestClient, edge: EdgeServer):
    evaluation_id = _start(api)
    with transaction(state(api).db) as db:
        first = db.scalar(select(func.min(EvaluationCase.id)))
        db.execute(update(EvaluationCase).where(EvaluationCase.id == first).values(attempts=3))
    calls = len(edge.requests)
    live: EvaluationQueue = state(api).evaluations
    while live.run_once():
        pass
    results = _results(api, evaluation_id)
    assert results[0]["error"]["code"] == "EVALUATION_CASE_FAILED" and not results[0]["passed"]
    assert results[0]["run_id"] is None and len(edge.requests) == calls + 2
    assert [r["passed"] for r in results[1:]] == [True, True]


def test_queue_an_evaluation_whose_last_worker_died_before_ending_it_is_ended(api: TestClient):
    evaluation_id = _start(api)
    # A worker stores every result, then dies before the claim that would have ended the
    # evaluation: all its cases are closed, the evaluation is still open.
    dying = EvaluationQueue(state(api).runs)
    held = [dying.claim() for _ in range(3)]
    for case in held:
        assert case is not None
        dying.work(case)
    body = api.get(f"/api/evaluations/{evaluation_id}").json()
    assert body["cases_done"] == 3 and body["status"] == "running"
    # Another process's idle claim (or a restarted one's start) ends it.
    assert EvaluationQueue(state(api).runs).claim() is None
    body = api.get(f"/api/evaluations/{evaluation_id}").json()
    assert body["status"] == "done" and body["finished_at"] is not None
    assert body["summary"]["pass_rate"] == 1.0
    # Once ended it is left alone: a later sweep finds nothing.
    assert EvaluationQueue(state(api).runs).end_stranded() == 0
