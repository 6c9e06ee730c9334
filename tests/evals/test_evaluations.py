"""Evaluations over the API: a real evaluation of an example app with the bundled model,
exact outputs from an OpenAI-compatible edge (overrides, comparison), cancel, bad input."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai_edge import EdgeServer, Reply, serve_edge, sse_chunk
from waiting import poll_until

from appforge.client import Client
from appforge.core.settings import OpenAISettings, Settings
from tests.evals.support import ended, state

EXAMPLES = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples"
YAML = {"Content-Type": "application/yaml"}

ASK_APP = """\
version: 1
name: Ask
type: text
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    model: default
    prompt:
      ref: ask-prompt
      label: production
      variables: {question: "{{ input.question }}"}
    params: {temperature: 0, seed: 1, max_tokens: 8}
output:
  answer: "{{ answer.text }}"
"""


def _start(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/api/evaluations", json=body)
    assert r.status_code == 202, r.text
    made: dict[str, Any] = r.json()
    assert made["status"] == "queued"
    return made


def _wait(client: TestClient, evaluation_id: str) -> dict[str, Any]:
    return poll_until(lambda: ended(client, evaluation_id), interval=0.1)


def test_evaluation_of_the_example_app_with_the_bundled_model(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(evals={"workers": 2, "poll_seconds": 0.1}))
    app = client.post("/api/apps", content=(EXAMPLES / "summarize.yaml").read_text(), headers=YAML)
    assert app.status_code == 201, app.text
    client.post("/api/datasets", json={"name": "summaries"})
    jsonl = (EXAMPLES / "datasets" / "summarize.jsonl").read_text()
    assert client.post("/api/datasets/summaries/cases/import", content=jsonl).status_code == 201
    scorers = [
        {"type": "regex", "name": "words", "value": r"\w+"},  # built to pass
        {"type": "contains", "name": "nonsense", "value": "qzxj"},  # built to fail
        {"type": "similarity", "threshold": 0.0},
        {"type": "tokens", "threshold": 100_000},  # passes
        {"type": "latency_ms", "threshold": 0.001},  # fails: no run is that fast
    ]
    body = {
        "dataset": "summaries",
        "app": "Summarize",
        # Few tokens: the local model is slow; temperature 0 and a seed repeat results.
        "overrides": {"params": {"max_tokens": 8, "temperature": 0, "seed": 42}},
        "scorers": scorers,
        "concurrency": 2,
    }
    first = _wait(client, _start(client, **body)["id"])
    assert first["status"] == "done", first
    assert (first["cases_done"], first["cases_total"], first["dataset_revision"]) == (2, 2, 2)
    summary = first["summary"]
    assert summary["pass_rate"] == 0 and summary["cases_passed"] == 0
    assert summary["scores"]["words"] == 1 and summary["scores"]["nonsense"] == 0
    assert summary["scores"]["tokens"] == 1 and summary["scores"]["latency_ms"] == 0
    assert 0 <= summary["scores"]["similarity"] <= 1
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]
    assert summary["tokens"]["total"] > 0
    results = client.get(f"/api/evaluations/{first['id']}/results").json()
    assert [r["input"]["text"][:9] for r in results] == ["The cat s", "Paris is "]
    for result in results:
        run = client.get(f"/api/runs/{result['run_id']}").json()
        assert run["status"] == "succeeded" and run["output"] == result["output"]
        assert run["usage"]["completion_tokens"] <= 8  # the override of max_tokens ran
        verdicts = {s["scorer"]: s["passed"] for s in result["scores"]}
        assert verdicts == {
            "words": True,
            "nonsense": False,
            "similarity": True,
            "tokens": True,
            "latency_ms": False,
        }
        assert result["passed"] is False
    # The same evaluation again: the same outputs (temperature 0, seeded), nothing changed.
    second = _wait(client, _start(client, **body)["id"])
    compared = client.get(
        "/api/evaluations/compare", params={"a": first["id"], "b": second["id"]}
    ).json()
    assert compared["regressed"] == [] and compared["improved"] == []
    assert [c["a"]["output"] for c in compared["cases"]] == [
        c["b"]["output"] for c in compared["cases"]
    ]
    assert compared["aggregate"]["pass_rate"] == {"a": 0.0, "b": 0.0, "delta": 0.0}


# --- exact outputs: an OpenAI-compatible edge ---------------------------------------------


@pytest.fixture(scope="module")
def edge() -> Iterator[EdgeServer]:
    with serve_edge() as server:
        yield server


def _answers(edge: EdgeServer, *texts: str) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    edge.replies = [
        Reply(
            200,
            None,
            sse=[sse_chunk(t, None), sse_chunk(None, "stop"), sse_chunk(None, None, usage)],
        )
        for t in texts
    ]


def _streamed(text: str, usage: dict[str, int]) -> Reply:
    frames = [sse_chunk(text, None), sse_chunk(None, "stop"), sse_chunk(None, None, usage)]
    return Reply(200, None, sse=frames)


def _managed_prompt(client: TestClient) -> None:
    uc = client.post("/api/v1/use-cases", json={"name": "Evals"}).json()["id"]
    pid = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "ask-prompt"}).json()["id"]
    for text in ("Answer briefly.", "Answer in one word."):
        version = {
            "type": "chat",
            "template_messages": [
                {"role": "system", "content": text},
                {"role": "user", "content": "{{ question }}"},
            ],
        }
        assert client.post(f"/api/v1/prompts/{pid}/versions", json=version).status_code == 201
    client.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
    client.post(f"/api/v1/prompts/{pid}/versions/2/promote", json={"label": "staging"})


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    local_provider: Any,
    embedder: Any,
    edge: EdgeServer,
) -> Iterator[TestClient]:
    """One API for the module, with the model ``edge`` (scripted) beside the bundled one;
    the tests drive the evaluation workers themselves (``run_once``): one case at a time,
    in order. The app ``Ask`` pins a managed prompt; the dataset ``capitals`` has 3 cases."""
    from pydantic import SecretStr

    from api.app import create_app
    from tests.conftest import ADMIN_TOKEN

    settings = Settings(
        home=tmp_path_factory.mktemp("evals_home"),
        admin_token=SecretStr(ADMIN_TOKEN),
        openai=OpenAISettings(base_url=edge.url),
        models={"default": "local:smollm2", "edge": "openai:gpt-test"},
        evals={"workers": 0},
    )
    app = create_app(settings, providers={"local": local_provider}, embedder=embedder)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
        _managed_prompt(client)
        assert client.post("/api/apps", content=ASK_APP, headers=YAML).status_code == 201
        client.post("/api/datasets", json={"name": "capitals"})
        cases = [
            {"input": {"question": "Capital of France?"}, "expected": {"answer": "Paris"}},
            {"input": {"question": "Capital of Italy?"}, "expected": {"answer": "Rome"}},
            {"input": {"question": "Capital of Spain?"}, "expected": {"answer": "Madrid"}},
        ]
        r = client.post("/api/datasets/capitals/cases", json={"cases": cases})
        assert r.status_code == 201
        yield client


def _drain(client: TestClient) -> int:
    worked = 0
    while state(client).evaluations.run_once():
        worked += 1
    return worked


def _evaluate(client: TestClient, **extra: Any) -> dict[str, Any]:
    body = {
        "dataset": "capitals",
        "app": "Ask",
        "overrides": {"model": "edge"},
        "scorers": [{"type": "equals"}],
        "concurrency": 1,
        **extra,
    }
    made = _start(client, **body)
    _drain(client)
    done = ended(client, made["id"])
    assert done is not None and done["status"] == "done", done
    return done


def test_evaluation_overrides_and_comparison_with_exact_outputs(api: TestClient, edge: EdgeServer):
    before = len(edge.requests)
    _answers(edge, "Paris", "Rome", "Lisbon")
    a = _evaluate(api)
    assert a["summary"]["pass_rate"] == pytest.approx(2 / 3)
    systems = [r["messages"][0]["content"] for r in edge.requests[before:]]
    assert systems == ["Answer briefly."] * 3
    _answers(edge, "Paris", "Milan", "Madrid")
    overrides = {"model": "edge", "prompts": {"ask-prompt": {"label": "staging"}}}
    b = _evaluate(api, overrides=overrides)
    systems = [r["messages"][0]["content"] for r in edge.requests[before + 3 :]]
    assert systems == ["Answer in one word."] * 3
    results = api.get(f"/api/evaluations/{b['id']}/results").json()
    assert [r["output"]["answer"] for r in results] == ["Paris", "Milan", "Madrid"]
    assert results[1]["scores"][0]["reason"] == "expected Rome, got Milan"
    compared = api.get("/api/evaluations/compare", params={"a": a["id"], "b": b["id"]}).json()
    ids = [r["case_id"] for r in results]
    assert compared["regressed"] == [ids[1]] and compared["improved"] == [ids[2]]
    assert [c["change"] for c in compared["cases"]] == ["regressed", "improved", "same"]
    assert compared["cases"][0]["a"]["output"] == {"answer": "Rome"}
    assert compared["cases"][0]["b"]["output"] == {"answer": "Milan"}
    assert compared["aggregate"]["pass_rate"]["delta"] == 0
    assert compared["aggregate"]["tokens"] == {"a": 18, "b": 18, "delta": 0}
    listed = api.get("/api/evaluations", params={"dataset": "capitals", "status": "done"}).json()
    assert [e["id"] for e in listed][:2] == [b["id"], a["id"]]


def _judge_prompt(api: TestClient, name: str) -> None:
    """A managed judge prompt ``name``, its version 1 in production."""
    uc = api.post("/api/v1/use-cases", json={"name": f"Judges {name}"}).json()["id"]
    pid = api.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": name}).json()["id"]
    template = "Q: {{ input.question }} A: {{ output.answer }} Want: {{ expected.answer }}. Score?"
    api.post(f"/api/v1/prompts/{pid}/versions", json={"type": "text", "template_text": template})
    api.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})


def test_evaluation_judge_scores_with_a_managed_prompt_and_a_model(
    api: TestClient, edge: EdgeServer
):
    _judge_prompt(api, "judge-prompt")
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    replies = []
    for answer, verdict in (("Paris", "9/10"), ("Milan", "Score: 0.2"), ("Madrid", "no idea")):
        replies += [_streamed(answer, usage), _streamed(verdict, usage)]
    edge.replies = replies
    judge = {"type": "judge", "prompt": "judge-prompt", "model": "edge", "threshold": 0.5}
    made = _evaluate(api, scorers=[judge])
    results = api.get(f"/api/evaluations/{made['id']}/results").json()
    scores = [r["scores"][0] for r in results]
    assert [(s["score"], s["passed"]) for s in scores] == [(0.9, True), (0.2, False), (0, False)]
    assert scores[0]["prompt"] == [
        {"role": "user", "content": "Q: Capital of France? A: Paris Want: Paris. Score?"}
    ]
    assert scores[0]["answer"] == "9/10" and "no score" in scores[2]["reason"]
    missing = {**judge, "prompt": "no-such-prompt"}
    body = {"dataset": "capitals", "app": "Ask", "scorers": [missing]}
    r = api.post("/api/evaluations", json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "SCORER_INVALID"


def test_cancelling_an_evaluation_cuts_its_judge_short(api: TestClient, edge: EdgeServer):
    """Before, the judge's model call went on after its evaluation was cancelled, to the
    model's read timeout (60 s by default), holding its worker; here the silent model
    server gives up after 30 s and would see no hang-up. Now the call is cut at once and
    no score is stored for the case."""
    _judge_prompt(api, "judge-silent")
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    silent = Reply(200, None, sse=[sse_chunk("8", None)], hold=True, chunked=True)
    edge.replies = [_streamed("Paris", usage), silent]
    asked = len(edge.requests)
    edge.hung_up.clear()
    judge = {"type": "judge", "prompt": "judge-silent", "model": "edge"}
    made = _start(api, dataset="capitals", app="Ask", overrides={"model": "edge"}, scorers=[judge])
    worker = threading.Thread(target=state(api).evaluations.run_once)
    worker.start()
    poll_until(lambda: len(edge.requests) == asked + 2)  # the run, then the judge
    assert api.post(f"/api/evaluations/{made['id']}/cancel").status_code == 200
    worker.join(120)
    assert not worker.is_alive()
    assert edge.hung_up.is_set()  # the judge hung up: the server did not time out first
    results = api.get(f"/api/evaluations/{made['id']}/results").json()
    assert all(not r["scores"] for r in results), results


def test_evaluation_names_the_revision_and_ignores_later_case_changes(
    api: TestClient, edge: EdgeServer
):
    _answers(edge, "Paris", "Rome", "Madrid")
    api.post("/api/datasets", json={"name": "revised"})
    exported = api.get("/api/datasets/capitals/cases/export").text
    api.post("/api/datasets/revised/cases/import", content=exported)
    made = _start(
        api, dataset="revised", app="Ask", overrides={"model": "edge"}, scorers=[{"type": "equals"}]
    )
    # A change after the start raises the dataset's revision, not the evaluation's cases.
    api.post("/api/datasets/revised/cases", json={"cases": [{"input": {"question": "?"}}]})
    assert api.get("/api/datasets/revised").json()["revision"] == 3
    assert _drain(api) == 3
    done = api.get(f"/api/evaluations/{made['id']}").json()
    figures = (done["dataset_revision"], done["cases_total"], done["summary"]["pass_rate"])
    assert figures == (2, 3, 1)


def test_evaluation_cancel_stops_what_is_not_done(api: TestClient, edge: EdgeServer):
    _answers(edge, "Paris")
    made = _start(
        api,
        dataset="capitals",
        app="Ask",
        overrides={"model": "edge"},
        scorers=[{"type": "equals"}],
    )
    assert state(api).evaluations.run_once()  # one case done
    r = api.post(f"/api/evaluations/{made['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["cases_done"] == 1 and r.json()["summary"]["pass_rate"] == 1
    assert _drain(api) == 0
    statuses = [c["status"] for c in api.get(f"/api/evaluations/{made['id']}/results").json()]
    assert statuses == ["done", "cancelled", "cancelled"]
    again = api.post(f"/api/evaluations/{made['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "EVALUATION_FINISHED"


def test_evaluation_of_a_deleted_app_fails(api: TestClient, edge: EdgeServer):
    doomed = api.post(
        "/api/apps", content=ASK_APP.replace("name: Ask", "name: Doomed"), headers=YAML
    )
    before = len(edge.requests)
    made = _start(api, dataset="capitals", app="Doomed", scorers=[{"type": "equals"}])
    assert api.delete(f"/api/apps/{doomed.json()['uuid']}").status_code == 204
    assert _drain(api) == 1
    failed = api.get(f"/api/evaluations/{made['id']}").json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "APP_NOT_FOUND"
    assert failed["cases_done"] == 0 and len(edge.requests) == before


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"dataset": "nope"}, 404, "DATASET_NOT_FOUND"),
        ({"app": "nope"}, 404, "APP_NOT_FOUND"),
        ({"app_version": 9}, 404, "APP_VERSION_NOT_FOUND"),
        ({"scorers": [{"type": "regex", "value": "("}]}, 422, "SCORER_INVALID"),
        ({"scorers": [{"type": "nope"}]}, 422, "VALIDATION_ERROR"),
        ({"scorers": []}, 422, "VALIDATION_ERROR"),
        ({"overrides": {"prompts": {"ask-prompt": {"label": "nope"}}}}, 422, "OVERRIDE_INVALID"),
        ({"overrides": {"prompts": {"ask-prompt": {}}}}, 422, "VALIDATION_ERROR"),
        ({"overrides": {"params": {"temperature": 9}}}, 422, "OVERRIDE_INVALID"),
        ({"concurrency": 1000}, 422, "VALIDATION_ERROR"),
    ],
)
def test_evaluation_bad_requests_store_nothing(
    api: TestClient, change: dict[str, Any], status: int, code: str
):
    body = {"dataset": "capitals", "app": "Ask", "scorers": [{"type": "equals"}], **change}
    before = api.get("/api/evaluations").json()
    r = api.post("/api/evaluations", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert api.get("/api/evaluations").json() == before


def test_evaluation_of_an_empty_dataset_is_refused(api: TestClient):
    api.post("/api/datasets", json={"name": "empty"})
    r = api.post(
        "/api/evaluations", json={"dataset": "empty", "app": "Ask", "scorers": [{"type": "equals"}]}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "DATASET_EMPTY"
    assert (
        json.loads(api.get("/api/evaluations/nope").text)["error"]["code"] == "EVALUATION_NOT_FOUND"
    )


def _ask_prompt_id(api: TestClient) -> str:
    uc = next(u for u in api.get("/api/v1/use-cases").json() if u["name"] == "Evals")
    prompts = api.get(f"/api/v1/use-cases/{uc['id']}/prompts").json()
    pid: str = next(p["id"] for p in prompts if p["name"] == "ask-prompt")
    return pid


def test_gated_promotion_moves_the_label_only_when_its_evaluation_passes(
    api: TestClient, edge: EdgeServer
):
    gated = ASK_APP.replace("name: Ask", "name: AskEdge").replace("model: default", "model: edge")
    assert api.post("/api/apps", content=gated, headers=YAML).status_code == 201
    pid = _ask_prompt_id(api)
    require = {
        "dataset": "capitals",
        "app": "AskEdge",
        "scorers": [{"type": "equals"}],
        "min_pass_rate": 0.9,
    }
    body = {"label": "production", "require": require}
    before = len(edge.requests)
    _answers(edge, "Paris", "Milan", "Madrid")
    refused = api.post(f"/api/v1/prompts/{pid}/versions/2/promote", json=body)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "EVALUATION_FAILED" and error["details"]["pass_rate"] < 0.9
    # The candidate ran (version 2's system message), and the label stayed on version 1.
    systems = [r["messages"][0]["content"] for r in edge.requests[before:]]
    assert systems == ["Answer in one word."] * 3
    assert "production" in api.get(f"/api/v1/prompts/{pid}/versions/1").json()["labels"]
    failed = api.get(f"/api/evaluations/{error['details']['evaluation_id']}").json()
    assert failed["overrides"] == {"prompts": {pid: {"version": 2}}}

    _answers(edge, "Paris", "Rome", "Madrid")
    af = Client("http://testserver", http=api)  # the Python client's face of the same call
    moved = af.promote(pid, 2, "production", require=require)
    assert "production" in moved.labels
    history = api.get(f"/api/v1/prompts/{pid}/deployments").json()["history"]
    gated_moves = [h for h in history if (h["notes"] or "").startswith("evaluation ")]
    assert len(gated_moves) == 1
    last = gated_moves[0]
    assert (last["version"], last["environment"]) == (2, "production")
    evaluation = api.get(f"/api/evaluations/{last['notes'].split()[1]}").json()
    assert evaluation["summary"]["pass_rate"] == 1
    # Put production back where the other tests expect it.
    api.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
