"""The official ``openai`` SDK against a real ``appforge serve``: apps as models, chat
completions streamed and not (``OpenAI`` and ``AsyncOpenAI``), sessions, and the
SDK's typed errors for 401, 403, 404 and 429.

The app's model is a fake OpenAI-compatible server on 127.0.0.1 (the network
edge), so the answer is exact; the server process, runs and storage are real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_model import FakeModel, serve_model
from openai import AsyncOpenAI, OpenAI
from server_process import ServerProcess

TOKEN = "af_openai_sdk_admin_token_0123456"
ANSWER = "Hold the power button for ten seconds."
APP = """\
version: 1
name: Support bot
type: chat
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      system: Answer briefly.
      user: "{{ input.question }}"
    history: 4
output:
  answer: "{{ answer.text }}"
"""


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModel]:
    with serve_model(FakeModel(default=ANSWER, pause=0.01)) as served:
        yield served


def _env(model: FakeModel, home: Path, **extra: str) -> dict[str, str]:
    return {
        "APPFORGE_HOME": str(home),
        "APPFORGE_ADMIN_TOKEN": TOKEN,
        "APPFORGE_OPENAI__BASE_URL": model.url,
        "APPFORGE_OPENAI__API_KEY": "fake",
        "APPFORGE_MODELS": json.dumps({"default": "openai:fake"}),
        **extra,
    }


@pytest.fixture(scope="module")
def server(model: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("sdk") / "home"
    process = ServerProcess(_env(model, home, APPFORGE_RATE_LIMIT__ENABLED="false"))
    try:
        yield process.base
    finally:
        process.stop()


@pytest.fixture(scope="module")
def app(server: str) -> dict[str, Any]:
    headers = {"Authorization": f"Token {TOKEN}", "Content-Type": "application/yaml"}
    r = httpx.post(f"{server}/api/apps", content=APP, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def _sdk(server: str, key: str = TOKEN) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0, timeout=120)


def test_sdk_chat_completion_and_session(server: str, app: dict[str, Any]):
    with _sdk(server) as client:
        _completion_and_session(client, server, app)


def _completion_and_session(client: OpenAI, server: str, app: dict[str, Any]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="Support bot", messages=[{"role": "user", "content": "How do I reset it?"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    session = raw.headers["x-session-id"]
    again = client.chat.completions.create(
        model=app["uuid"],
        messages=[{"role": "user", "content": "And then?"}],
        extra_headers={"X-Session-ID": session},
    )
    assert again.choices[0].message.content == ANSWER
    admin = {"Authorization": f"Token {TOKEN}"}
    turns = httpx.get(f"{server}/api/sessions/{session}", headers=admin, timeout=60).json()["turns"]
    assert [t["input"]["question"] for t in turns] == ["How do I reset it?", "And then?"]


def test_sdk_streams_chunks_and_usage(server: str, app: dict[str, Any]):
    with _sdk(server) as client:
        stream = client.chat.completions.create(
            model=app["uuid"],
            messages=[{"role": "user", "content": "How do I reset it?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(texts) == ANSWER and len([t for t in texts if t]) >= 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_sdk_async_client(server: str, app: dict[str, Any]):
    async def talk() -> tuple[str | None, str]:
        client = AsyncOpenAI(base_url=f"{server}/v1", api_key=TOKEN, max_retries=0)
        async with client:
            messages: Any = [{"role": "user", "content": "Hi?"}]
            whole = await client.chat.completions.create(model=app["uuid"], messages=messages)
            stream = await client.chat.completions.create(
                model=app["uuid"], messages=messages, stream=True
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return whole.choices[0].message.content, "".join(pieces)

    assert asyncio.run(talk()) == (ANSWER, ANSWER)


def test_sdk_models(server: str, app: dict[str, Any]):
    with _sdk(server) as client:
        listed = client.models.list()
        assert app["uuid"] in [m.id for m in listed.data]
        one = client.models.retrieve(app["uuid"])
        assert (one.id, one.object, one.owned_by) == (app["uuid"], "model", "appforge")
        assert client.models.retrieve("Support bot").id == app["uuid"]


def test_sdk_typed_errors(server: str, app: dict[str, Any]):
    messages: Any = [{"role": "user", "content": "Hi"}]
    with _sdk(server, "af_wrong_token_0123456789") as stranger:
        with pytest.raises(openai.AuthenticationError) as denied:
            stranger.models.list()
    assert denied.value.status_code == 401 and denied.value.code == "TOKEN_INVALID"
    with _sdk(server) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such-app", messages=messages)
        assert missing.value.code == "APP_NOT_FOUND" and missing.value.type == "not_found_error"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("no-such-app")
        with pytest.raises(openai.UnprocessableEntityError) as unprocessable:
            client.chat.completions.create(
                model=app["uuid"], messages=[{"role": "assistant", "content": "Hi"}]
            )
        assert unprocessable.value.code == "LAST_MESSAGE_NOT_USER"
    # A runner key narrowed to another app.
    admin = {"Authorization": f"Token {TOKEN}"}
    with httpx.Client(base_url=server, headers=admin, timeout=60) as api:
        yaml = {"Content-Type": "application/yaml"}
        other = api.post("/api/apps", content=APP.replace("Support bot", "Other"), headers=yaml)
        body = {"name": "only-other", "role": "runner", "apps": [other.json()["uuid"]]}
        key = api.post("/api/tokens", json=body).json()["token"]
    with _sdk(server, key) as runner:
        with pytest.raises(openai.PermissionDeniedError) as forbidden:
            runner.chat.completions.create(model=app["uuid"], messages=messages)
        assert forbidden.value.code == "APP_FORBIDDEN"
        assert [m.id for m in runner.models.list().data] == [other.json()["uuid"]]


def test_sdk_rate_limit_error(model: FakeModel, tmp_path: Path):
    env = _env(
        model,
        tmp_path / "home",
        APPFORGE_RATE_LIMIT__BURST="2",
        APPFORGE_RATE_LIMIT__REQUESTS="1",
        APPFORGE_RATE_LIMIT__WINDOW_SECONDS="3600",
    )
    process = ServerProcess(env)
    try:
        with _sdk(process.base) as client:
            client.models.list()
            client.models.list()
            with pytest.raises(openai.RateLimitError) as limited:
                client.models.list()
        assert limited.value.status_code == 429 and limited.value.code == "RATE_LIMITED"
        assert int(limited.value.response.headers["retry-after"]) >= 1
    finally:
        process.stop()


def test_sdk_sees_an_error_frame_mid_stream(server: str):
    failing = APP.replace("name: Support bot", "name: Breaks late").replace(
        'output:\n  answer: "{{ answer.text }}"',
        'output:\n  answer: "{{ answer.text }}"\n  ratio: "{{ 1 // 0 }}"\nopenai: {output: answer}',
    )
    headers = {"Authorization": f"Token {TOKEN}", "Content-Type": "application/yaml"}
    made = httpx.post(f"{server}/api/apps", content=failing, headers=headers, timeout=60)
    assert made.status_code == 201, made.text
    pieces: list[str] = []
    with _sdk(server) as client:
        stream = client.chat.completions.create(
            model="Breaks late", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as broken:
            for chunk in stream:
                pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == ANSWER  # the answer came before the failure
    assert broken.value.code == "TEMPLATE_ERROR"
