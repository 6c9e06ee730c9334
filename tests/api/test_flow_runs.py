"""Python flows through the run API: served in-process, stored and streamed like YAML apps."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from app_docs import YAML
from fastapi.testclient import TestClient
from sqlalchemy import select
from waiting import poll_until

from api.app import create_app
from appforge.core.settings import Settings
from apps_yaml.flows import Flow, StepContext, StepResult
from runs.tables import RunPrompt

EXAMPLE = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples" / "flows"
TEXT = "Cats sleep most of the day.\n\nDogs like long walks in the park."


def _example() -> Flow:
    """The example flow with shorter answers (8 and 16 tokens, not 40 and 80): these tests
    check fan-out, fan-in and streaming through the API, not how long a summary is, and
    each token of the local model costs time on a loaded machine."""
    path = EXAMPLE / "summarize_many.py"
    shipped = path.read_text()
    source = shipped.replace("max_tokens=40,", "max_tokens=8,").replace(
        "max_tokens=80,", "max_tokens=16,"
    )
    assert source.count("max_tokens=8,") == 1 and source.count("max_tokens=16,") == 1
    spec = importlib.util.spec_from_loader("example_flow_api", loader=None, origin=str(path))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, str(path), "exec"), module.__dict__)
    flow: Flow = module.flow
    return flow


def _chat_flow() -> Flow:
    """Remembers the session: each run reports the earlier turns it was given."""
    flow = Flow("remember", history=5, input={"msg": {"type": "string", "required": True}})

    @flow.step("recall", initial=True)
    def recall(ctx: StepContext, msg: str) -> StepResult:
        earlier = [{"msg": t.input["msg"], "reply": t.output["reply"]} for t in ctx.history]
        return StepResult(reply=f"#{len(earlier) + 1}: {msg}", earlier=earlier)

    return flow


@pytest.fixture
def serve(
    local_provider: Any, embedder: Any, admin_token: str
) -> Iterator[Callable[..., TestClient]]:
    """The real API serving the given flows (lifespan included), admin token preset."""
    opened: list[TestClient] = []

    def make(settings: Settings, *flows: Flow) -> TestClient:
        app = create_app(
            settings,
            providers={"local": local_provider},
            embedder=embedder,
            flows={f.name: f for f in flows},
        )
        client = TestClient(app)
        client.__enter__()
        client.headers["Authorization"] = f"Token {admin_token}"
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _save(client: TestClient, flow: Flow) -> str:
    text = yaml.safe_dump(flow.app_document(), sort_keys=False)
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 201, r.text
    assert r.json()["definition"]["flow"] == flow.name
    assert "steps" not in r.json()["definition"]
    uuid: str = r.json()["uuid"]
    return uuid


def _ndjson(client: TestClient, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", url, json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def test_flow_run_fans_out_and_in_through_the_api(
    serve: Callable[..., TestClient], settings: Settings
):
    client = serve(settings, _example())
    uuid = _save(client, _example())
    url = f"/api/apps/{uuid}/run"
    r = client.post(url, json={"input": {"text": TEXT}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"]["paragraphs"] == 2
    assert len(body["output"]["points"]) == 2 and body["output"]["summary"]
    assert body["run"]["status"] == "succeeded"
    run = client.get(f"/api/runs/{body['run']['id']}").json()
    assert run["input"] == {"text": TEXT}
    assert run["output"] == body["output"]
    assert [s["id"] for s in run["steps"]] == ["split#1", "summarize#2", "summarize#3", "join#4"]
    for step in run["steps"]:
        assert step["kind"] == "flow" and step["status"] == "succeeded"
        assert step["latency_ms"] >= 0
    split, first, second, join = run["steps"]
    assert split["output"] == {"part": TEXT.split("\n\n")}
    assert first["input"] == {"part": "Cats sleep most of the day."}
    assert second["input"] == {"part": "Dogs like long walks in the park."}
    assert first["calls"][0]["model"] and first["usage"]["completion_tokens"] > 0
    assert join["input"] == {"summary": [first["output"]["summary"], second["output"]["summary"]]}
    assert body["output"]["points"] == join["input"]["summary"]
    assert run["usage"]["total_tokens"] == sum(
        s["usage"].get("total_tokens", 0) for s in run["steps"]
    )

    # Streamed: the answer in many NDJSON chunks, then the whole outputs, then done;
    # the chunks stitch byte for byte to the stored output (and the non-streamed one).
    lines = _ndjson(client, url, {"input": {"text": TEXT}, "stream": True})
    *chunks, done = lines
    assert done["done"] is True and done["run"]["status"] == "succeeded"
    assert all(c["session"] == done["session"] for c in chunks)
    keys = [k for c in chunks for k in c["output"]]
    assert keys[-2:] == ["points", "paragraphs"] and set(keys[:-2]) == {"summary"}
    assert len(keys) - 2 > 1  # the answer arrived in more than one chunk
    stored = client.get(f"/api/runs/{done['run']['id']}").json()
    assert stored["status"] == "succeeded" and stored["stream"] is True
    assert _stitch(chunks) == stored["output"] == body["output"]
    assert stored["ttft_ms"] < stored["latency_ms"]
    # SSE carries the same JSON
    body_sse = {"input": {"text": TEXT}, "stream": True}
    with client.stream("POST", url, json=body_sse, headers={"Accept": "text/event-stream"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [dict(ln.split(": ", 1) for ln in b.split("\n")) for b in raw.split("\n\n") if b]
    assert [e["event"] for e in events] == ["chunk"] * (len(events) - 1) + ["done"]
    assert len(events) == len(lines)
    assert _stitch([json.loads(e["data"]) for e in events[:-1]]) == body["output"]
    runs = client.get(f"/api/apps/{uuid}/runs").json()
    assert [r["status"] for r in runs] == ["succeeded"] * 3
    assert all(len(r["steps"]) == 4 for r in runs)


def _stitch(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client makes of chunks: strings concatenated per key, other values whole."""
    out: dict[str, Any] = {}
    for chunk in chunks:
        for key, piece in chunk["output"].items():
            out[key] = out.get(key, "") + piece if isinstance(piece, str) else piece
    return out


def _streaming_flow(name: str, max_tokens: int, returns: str = "same") -> Flow:
    """One step that streams ``story``; ``returns``: "same" or "different" text."""
    flow = Flow(name, input={"topic": {"type": "string", "default": "the sea"}})

    @flow.step("write", initial=True)
    def write(ctx: StepContext, topic: str) -> StepResult:
        text = ctx.llm(f"Write a very long story about {topic}.", temperature=0, seed=1,
                       max_tokens=max_tokens, stream="story")  # fmt: skip
        return StepResult(story=text if returns == "same" else text.upper(), n=1)

    return flow


def _wait_finished(client: TestClient, run_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        return None if run["status"] == "running" else run

    return poll_until(finished)


def _flow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("appforge-flow-step-")]


def test_flow_stream_contradicted_by_the_step_sends_an_error_line(
    serve: Callable[..., TestClient], settings: Settings
):
    flow = _streaming_flow("liar", 16, returns="different")
    client = serve(settings, flow)
    uuid = _save(client, flow)
    with client.stream("POST", f"/api/apps/{uuid}/run", json={"stream": True}) as r:
        assert r.status_code == 200
        run_id = r.headers["x-run-id"]
        *chunks, error = [json.loads(line) for line in r.iter_lines() if line]
    assert len(chunks) > 1 and all(list(c["output"]) == ["story"] for c in chunks)
    assert error["error"]["code"] == "FLOW_INVALID"
    assert "streamed output 'story' but returned a different value" in error["error"]["message"]
    assert error["error"]["details"] == {"run_id": run_id, "step": "write"}
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "failed" and run["error"]["code"] == "FLOW_INVALID"
    assert run["output"] == _stitch(chunks)  # exactly what the client saw, nothing more
    assert run["steps"][0]["status"] == "failed"

    # a fan-out branch cannot stream: refused before the first byte, a plain error
    fan = Flow("fan")

    @fan.step("split", initial=True, one_to_many=True)
    def split(ctx: StepContext) -> StepResult:
        return StepResult(next_step="each", item=["a"])

    @fan.step("each")
    def each(ctx: StepContext, item: str) -> StepResult:
        return StepResult(text=ctx.llm(item, max_tokens=4, stream="text"))

    client = serve(settings, fan)
    uuid = _save(client, fan)
    r = client.post(f"/api/apps/{uuid}/run", json={"stream": True})
    assert r.status_code == 500 and r.json()["error"]["code"] == "FLOW_INVALID"
    assert "fan-out branch" in r.json()["error"]["message"]
    run = client.get(f"/api/runs/{r.json()['error']['details']['run_id']}").json()
    assert run["status"] == "failed" and run["output"] == {}


def test_flow_stream_cancelled_when_the_client_goes_away(
    serve: Callable[..., TestClient], settings: Settings
):
    flow = _streaming_flow("storyteller", 400)
    client = serve(settings, flow)
    uuid = _save(client, flow)
    with client.stream("POST", f"/api/apps/{uuid}/run", json={"stream": True}) as r:
        run_id = r.headers["x-run-id"]
        lines = r.iter_lines()
        first = json.loads(next(lines))
        assert list(first["output"]) == ["story"]
    # leaving the block closes the stream mid-generation
    run = _wait_finished(client, run_id)
    assert run["status"] == "cancelled" and run["error"]["code"] == "CANCELLED"
    assert run["error"]["step"] == "write"
    assert run["output"]["story"].startswith(first["output"]["story"])
    assert "n" not in run["output"]  # the step's other outputs never came
    assert 0 < run["usage"]["completion_tokens"] < 400
    assert run["steps"][0]["status"] == "cancelled"
    assert client.get(f"/api/sessions/{run['session_id']}").json()["turns"] == []
    assert _flow_threads() == []  # the step's thread ended with the run


def test_flow_stream_timeout_stores_timeout_with_partial_output(
    serve: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    flow = _streaming_flow("slow", 400)
    client = serve(make_settings(runs={"timeout_seconds": 1}), flow)
    uuid = _save(client, flow)
    r = client.post(f"/api/apps/{uuid}/run", json={})
    assert r.status_code == 504 and r.json()["error"]["code"] == "RUN_TIMEOUT"
    run = client.get(f"/api/runs/{r.json()['error']['details']['run_id']}").json()
    assert run["status"] == "timeout" and run["error"]["step"] == "write"
    assert list(run["output"]) == ["story"]  # what was streamed; the step never returned
    assert run["usage"]["completion_tokens"] < 400
    assert _flow_threads() == []


def test_flow_run_records_the_managed_prompt_version(
    serve: Callable[..., TestClient], settings: Settings
):
    flow = Flow("shouter")

    @flow.step("say", prompt="shout", initial=True)
    def say(ctx: StepContext, word: str) -> StepResult:
        return StepResult(text=ctx.llm(variables={"word": word}, max_tokens=8, temperature=0))

    client = serve(settings, flow)
    uc = client.post("/api/v1/use-cases", json={"name": "F"}).json()["id"]
    pid = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "shout"}).json()["id"]
    for text in ("Repeat loudly: {{ word }}", "Whisper: {{ word }}"):
        body = {"type": "text", "template_text": text}
        assert client.post(f"/api/v1/prompts/{pid}/versions", json=body).status_code == 201
    client.post(f"/api/v1/prompts/{pid}/versions/2/promote", json={"label": "production"})
    uuid = _save(client, flow)
    assert flow.app_document()["input"] == {"word": {"type": "string", "required": True}}
    r = client.post(f"/api/apps/{uuid}/run", json={"input": {"word": "hello"}})
    assert r.status_code == 200, r.text
    run_id = r.json()["run"]["id"]
    step = client.get(f"/api/runs/{run_id}").json()["steps"][0]
    assert step["prompt"] == {"id": pid, "name": "shout", "version": 2, "label": "production"}
    assert step["calls"][0]["messages"] == [{"role": "user", "content": "Whisper: hello"}]
    with client.app.state.api.db() as db:  # type: ignore[attr-defined]
        rows = list(db.scalars(select(RunPrompt).where(RunPrompt.run_id == run_id)))
    assert [(p.step_id, p.prompt_id, p.prompt_version, p.label) for p in rows] == [
        ("say#1", pid, 2, "production")
    ]


def test_flow_session_second_run_sees_the_first_turn(
    serve: Callable[..., TestClient], settings: Settings
):
    flow = _chat_flow()
    client = serve(settings, flow)
    uuid = _save(client, flow)
    assert client.get(f"/api/apps/{uuid}").json()["type"] == "chat"
    url = f"/api/apps/{uuid}/run/s-1"
    first = client.post(url, json={"input": {"msg": "hello"}}).json()
    assert first["output"] == {"reply": "#1: hello", "earlier": []}
    lines = _ndjson(client, url, {"input": {"msg": "again"}, "stream": True})
    output = {k: v for line in lines[:-1] for k, v in line["output"].items()}
    assert output == {"reply": "#2: again", "earlier": [{"msg": "hello", "reply": "#1: hello"}]}
    assert lines[-1]["session"] == {"id": "s-1"}
    turns = client.get("/api/sessions/s-1").json()["turns"]
    assert [t["input"]["msg"] for t in turns] == ["hello", "again"]
    # another session starts afresh
    other = client.post(f"/api/apps/{uuid}/run/s-2", json={"input": {"msg": "x"}}).json()
    assert other["output"]["earlier"] == []


def test_flow_failures_and_bad_input_through_the_api(
    serve: Callable[..., TestClient], settings: Settings
):
    flow = Flow("fragile")

    @flow.step("a", initial=True)
    def a(ctx: StepContext, n: int, note: str = "") -> StepResult:
        if n < 0:
            return StepResult(error="n must not be negative")
        return StepResult(double=2 * n)

    client = serve(settings, flow)
    uuid = _save(client, flow)
    url = f"/api/apps/{uuid}/run"
    assert client.post(url, json={"input": {"n": 2}}).json()["output"] == {"double": 4}
    r = client.post(url, json={"input": {"n": "two"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "INPUT_INVALID"
    r = client.post(url, json={"input": {"n": -1}})
    assert r.status_code == 500 and r.json()["error"]["code"] == "FLOW_STEP_FAILED"
    run = client.get(f"/api/runs/{r.json()['error']['details']['run_id']}").json()
    assert run["status"] == "failed" and run["error"]["step"] == "a"
    assert run["steps"][0]["status"] == "failed"
    assert run["steps"][0]["error"] == "n must not be negative"
    statuses = [x["status"] for x in client.get(f"/api/apps/{uuid}/runs").json()]
    assert sorted(statuses) == ["failed", "succeeded"]  # the bad input stored nothing


def test_flow_unknown_at_save_is_refused(serve: Callable[..., TestClient], settings: Settings):
    client = serve(settings, _example())
    text = "name: Ghost\ndescription: x\nflow: not-served\n"
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "APP_INVALID"
    [problem] = error["details"]["errors"]
    assert problem["path"] == "flow" and problem["line"] == 3
    assert "appforge run flow.py --serve" in problem["message"]
    assert client.get("/api/apps").json() == []


def test_flow_with_steps_is_refused(serve: Callable[..., TestClient], settings: Settings):
    client = serve(settings, _example())
    text = """\
name: Both
flow: summarize-many
steps:
  - id: a
    kind: llm
    prompt: {user: hi}
"""
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 422, r.text
    [problem] = r.json()["error"]["details"]["errors"]
    assert problem["path"] == "steps" and problem["line"] == 3
    assert "flow" in problem["message"]
    r = client.post("/api/apps", content="name: Neither\n", headers=YAML)
    assert r.status_code == 422
    [problem] = r.json()["error"]["details"]["errors"]
    assert problem["message"].startswith("missing required keys 'steps' and 'output'")
    assert client.get("/api/apps").json() == []


def test_flow_not_served_at_run_is_409(
    serve: Callable[..., TestClient], settings: Settings, admin_token: str
):
    first = serve(settings, _example())
    uuid = _save(first, _example())
    first.__exit__(None, None, None)  # the server stops; a new one starts without the flow
    client = serve(settings)
    r = client.post(f"/api/apps/{uuid}/run/s-9", json={"input": {"text": TEXT}})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "FLOW_NOT_SERVED" and error["details"] == {"flow": "summarize-many"}
    assert "appforge run" in error["message"]
    assert client.get(f"/api/apps/{uuid}/runs").json() == []
    assert client.get("/api/sessions/s-9").status_code == 404
    # a new version of the app cannot be saved here either
    text = client.get(f"/api/apps/{uuid}", headers={"Accept": "application/yaml"}).text
    r = client.patch(f"/api/apps/{uuid}", content=text + "public: true\n", headers=YAML)
    assert r.status_code == 422 and r.json()["error"]["details"]["errors"][0]["path"] == "flow"


def test_flow_prompt_render_ends_at_the_run_timeout(
    serve: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    flow = Flow("looper")

    @flow.step("say", prompt="loop", initial=True)
    def say(ctx: StepContext, word: str) -> StepResult:
        return StepResult(text=ctx.llm(variables={"word": word}, max_tokens=1))

    client = serve(make_settings(runs={"timeout_seconds": 1, "workers": 1}), flow)
    uc = client.post("/api/v1/use-cases", json={"name": "L"}).json()["id"]
    pid = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "loop"}).json()["id"]
    nested = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    body = {"type": "text", "template_text": nested + "{{ word }}"}
    assert client.post(f"/api/v1/prompts/{pid}/versions", json=body).status_code == 201
    client.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
    uuid = _save(client, flow)
    r = client.post(f"/api/apps/{uuid}/run", json={"input": {"word": "x"}})
    # 10**10 loop iterations in the step's managed prompt: the run's timeout ends them.
    assert r.status_code == 504 and r.json()["error"]["code"] == "RUN_TIMEOUT"
    run = client.get(f"/api/runs/{r.json()['error']['details']['run_id']}").json()
    assert run["status"] == "timeout" and run["error"]["step"] == "say"
    assert _flow_threads() == []  # the step's thread ended with the run
