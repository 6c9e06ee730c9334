"""The OpenAI-compatible endpoint: answers whole and streamed, usage, history, sessions,
which input and output the messages map to.

The app's model is a scripted OpenAI look-alike on 127.0.0.1 (``openai_edge``),
so answers and token counts are exact; runs, sessions and storage are real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from e2e.fake_model import FakeModel, serve_model
from openai_edge import Reply, sse_chunk
from openai_v1 import QA_APP, USAGE, V1, assistant, sse_frames, user
from waiting import poll_until

from appforge.core.settings import OpenAISettings


def _ask(v1: V1, model: str, *messages: dict[str, Any], **extra: Any) -> Any:
    body = {"model": model, "messages": list(messages), **extra}
    return v1.client.post("/v1/chat/completions", json=body)


def test_openai_completion_answers_with_usage_and_stores_the_run(
    v1: V1, create: Callable[..., Any]
):
    app = create(v1.client, QA_APP)
    r = _ask(v1, app["uuid"], user("Hi?"), temperature=0.3, max_tokens=5, user="u1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == app["uuid"]
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello world"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert body["usage"] == USAGE
    run_id = r.headers["x-run-id"]
    assert body["id"] == f"chatcmpl-{run_id}"
    run = v1.client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["input"] == {"question": "Hi?"}
    assert run["output"] == {"answer": "Hello world"} and run["usage"] == USAGE
    assert run["session_id"] == r.headers["x-session-id"]
    # The app's own parameters, not the caller's: temperature and max_tokens are ignored.
    assert "max_tokens" not in v1.edge.requests[-1]
    assert v1.model_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
    ]


def test_openai_completion_by_app_name(v1: V1, create: Callable[..., Any]):
    create(v1.client, QA_APP)
    r = _ask(v1, "QA", user("Hi?"))
    assert r.status_code == 200 and r.json()["model"] == "QA"


def test_openai_stream_sends_role_deltas_finish_usage_done(v1: V1, create: Callable[..., Any]):
    app = create(v1.client, QA_APP)
    v1.answer("Hel", "lo", " there", usage=USAGE)
    body = {"model": app["uuid"], "messages": [user("Hi?")], "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    frames, r = sse_frames(v1.client, body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    *chunks, usage, done = frames
    assert done == "[DONE]"
    assert {c["object"] for c in chunks + [usage]} == {"chat.completion.chunk"}
    assert {c["id"] for c in chunks + [usage]} == {f"chatcmpl-{r.headers['x-run-id']}"}
    first, *deltas, last = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [d["choices"][0]["delta"]["content"] for d in deltas] == ["Hel", "lo", " there"]
    assert all(d["choices"][0]["finish_reason"] is None for d in [first, *deltas])
    assert last["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert usage["choices"] == [] and usage["usage"] == USAGE
    run = v1.client.get(f"/api/runs/{r.headers['x-run-id']}").json()
    assert run["output"] == {"answer": "Hello there"} and run["stream"] is True
    # Without include_usage: no usage frame.
    frames, _ = sse_frames(v1.client, {**body, "stream_options": None})
    assert frames[-1] == "[DONE]" and frames[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in f for f in frames[:-1])


def test_openai_finish_reason_length_when_the_model_hit_its_limit(
    v1: V1, create: Callable[..., Any]
):
    app = create(v1.client, QA_APP)
    cut = [sse_chunk("Hel", None), sse_chunk(None, "length"), sse_chunk(None, None, USAGE)]
    v1.edge.replies = [Reply(200, None, sse=cut)]
    whole = _ask(v1, app["uuid"], user("Hi?")).json()
    assert whole["choices"][0]["finish_reason"] == "length"
    body = {"model": app["uuid"], "messages": [user("Hi?")], "stream": True}
    frames, _ = sse_frames(v1.client, body)
    assert frames[-2]["choices"][0]["finish_reason"] == "length"


def test_openai_earlier_messages_are_the_history(v1: V1, create: Callable[..., Any]):
    app = create(v1.client, QA_APP)
    messages = [
        {"role": "system", "content": "ignored: the app has its own"},
        user("I am Ann."),
        assistant("Hi Ann."),
        user("I like tea."),
        assistant("Noted."),
        user("Who am I?"),
    ]
    r = _ask(v1, app["uuid"], *messages)
    assert r.status_code == 200, r.text
    assert v1.model_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I am Ann."},
        {"role": "assistant", "content": "Hi Ann."},
        {"role": "user", "content": "I like tea."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Who am I?"},
    ]
    # The app reads its last 3 turns (history: 3), as from a session.
    many = [m for n in range(5) for m in (user(f"q{n}"), assistant(f"a{n}"))]
    assert _ask(v1, app["uuid"], *many, user("last")).status_code == 200
    said = [m["content"] for m in v1.model_messages()[1:]]
    assert said == ["q2", "a2", "q3", "a3", "q4", "a4", "last"]
    # Only the run's own turn is stored in its new session.
    turns = v1.client.get(f"/api/sessions/{r.headers['x-session-id']}").json()["turns"]
    assert [t["input"] for t in turns] == [{"question": "Who am I?"}]


def test_openai_session_header_continues_the_session(v1: V1, create: Callable[..., Any]):
    app = create(v1.client, QA_APP)
    v1.answer("First answer.")
    first = _ask(v1, app["uuid"], user("First question."))
    session = first.headers["x-session-id"]
    v1.answer("Second answer.")
    body = {"model": app["uuid"], "messages": [user("not read"), assistant("no"), user("Next?")]}
    second = v1.client.post("/v1/chat/completions", json=body, headers={"X-Session-ID": session})
    assert second.status_code == 200, second.text
    assert second.headers["x-session-id"] == session
    assert [m["content"] for m in v1.model_messages()[1:]] == [
        "First question.",
        "First answer.",
        "Next?",
    ]
    turns = v1.client.get(f"/api/sessions/{session}").json()["turns"]
    assert [t["output"]["answer"] for t in turns] == ["First answer.", "Second answer."]


def test_openai_yaml_section_picks_input_and_output(v1: V1, create: Callable[..., Any]):
    two_inputs = QA_APP.replace(
        "  question: {type: string, required: true}\n",
        "  question: {type: string, required: true}\n  topic: {type: string, required: true}\n",
    ).replace('user: "{{ input.question }}"', 'user: "{{ input.topic }}: {{ input.question }}"')
    unclear = create(v1.client, two_inputs.replace("name: QA", "name: Unclear"))
    r = _ask(v1, unclear["uuid"], user("Hi"))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "OPENAI_INPUT_UNKNOWN"
    assert r.json()["error"]["type"] == "invalid_request_error"
    chosen = two_inputs.replace(
        "  topic: {type: string, required: true}\n", "  topic: {type: string, default: tea}\n"
    ).replace(
        'output:\n  answer: "{{ reply.text }}"',
        'output:\n  answer: "{{ reply.text }}"\n  echo: "{{ input.topic | upper }}"\n'
        "openai: {input: question, output: echo}",
    )
    app = create(v1.client, chosen)
    r = _ask(v1, app["uuid"], user("Why?"))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "TEA"
    assert v1.model_messages()[-1] == {"role": "user", "content": "tea: Why?"}
    frames, _ = sse_frames(v1.client, {"model": app["uuid"], "messages": [user("Why?")],
                                       "stream": True})  # fmt: skip
    texts = [f["choices"][0]["delta"].get("content", "") for f in frames[:-1]]
    assert "".join(texts) == "TEA"


def test_openai_content_as_text_parts(v1: V1, create: Callable[..., Any]):
    app = create(v1.client, QA_APP)
    parts = [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there?"}]
    r = _ask(v1, app["uuid"], {"role": "user", "content": parts})
    assert r.status_code == 200, r.text
    assert v1.model_messages()[-1] == {"role": "user", "content": "Hi there?"}


def test_openai_stream_error_after_first_frame_is_an_error_frame(
    v1: V1, create: Callable[..., Any]
):
    failing = QA_APP.replace(
        'output:\n  answer: "{{ reply.text }}"',
        'output:\n  answer: "{{ reply.text }}"\n  ratio: "{{ 1 // 0 }}"',
    ).replace("type: chat", "type: chat\nopenai: {output: answer}")
    app = create(v1.client, failing)
    frames, r = sse_frames(v1.client, {"model": app["uuid"], "messages": [user("Hi")],
                                       "stream": True})  # fmt: skip
    assert r.status_code == 200
    *chunks, error = frames
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello world"
    assert error["error"]["code"] == "TEMPLATE_ERROR"
    assert error["error"]["type"] == "server_error" and error["error"]["message"]
    run = v1.client.get(f"/api/runs/{r.headers['x-run-id']}").json()
    assert run["status"] == "failed" and run["output"]["answer"] == "Hello world"


def test_openai_stream_disconnect_cancels_the_run(
    make_v1: Callable[..., V1], create: Callable[..., Any]
):
    # A model that writes one word every 50 ms, for far longer than the test runs.
    words = " ".join(f"w{n}" for n in range(4000))
    with serve_model(FakeModel(default=words, pause=0.05)) as slow:
        v1 = make_v1(openai=OpenAISettings(base_url=slow.url))
        app = create(v1.client, QA_APP)
        body = {"model": app["uuid"], "messages": [user("Hi")], "stream": True}
        with v1.client.stream("POST", "/v1/chat/completions", json=body) as r:
            run_id = r.headers["x-run-id"]
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")  # the role frame
        # Leaving the block hung up mid-answer: the run stops and is stored cancelled.

        def finished() -> Any:
            run = v1.client.get(f"/api/runs/{run_id}").json()
            return run if run["status"] != "running" else None

        run = poll_until(finished)
    assert run["status"] == "cancelled" and run["error"]["code"] == "CANCELLED"
    assert run["output"]["answer"].startswith("w0") and "w3999" not in run["output"]["answer"]


def test_openai_runner_key_and_anonymous_caller_run_what_they_may(
    v1: V1, create: Callable[..., Any]
):
    app = create(v1.client, QA_APP)
    public = create(v1.client, QA_APP.replace("type: chat", "type: chat\npublic: true"))
    key = {"name": "r", "role": "runner", "apps": [app["uuid"]]}
    made = v1.client.post("/api/tokens", json=key)
    runner = {"Authorization": f"Bearer {made.json()['token']}"}
    body = {"model": app["uuid"], "messages": [user("Hi")]}
    ran = v1.client.post("/v1/chat/completions", json=body, headers=runner)
    assert ran.status_code == 200, ran.text
    run = v1.client.get(f"/api/runs/{ran.headers['x-run-id']}").json()
    assert run["status"] == "succeeded"
    # Anonymous: a public app, in a server-made session it may continue (its id is its key).
    nobody = {"Authorization": ""}
    body = {"model": public["uuid"], "messages": [user("Hi")], "stream": True}
    frames, first = sse_frames(v1.client, body, **nobody)
    assert first.status_code == 200 and frames[-1] == "[DONE]"
    session = first.headers["x-session-id"]
    assert len(session) >= 32
    again = v1.client.post("/v1/chat/completions", json={**body, "stream": False},
                           headers={**nobody, "X-Session-ID": session})  # fmt: skip
    assert again.status_code == 200 and again.headers["x-session-id"] == session
    turns = v1.client.get(f"/api/sessions/{session}").json()["turns"]
    assert len(turns) == 2
