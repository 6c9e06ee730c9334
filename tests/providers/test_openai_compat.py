"""OpenAICompatProvider against a real llama_cpp.server on 127.0.0.1.

Behaviours llama_cpp.server cannot show (it serves any model name, never
rate-limits, sends no usage in streams) are checked against a tiny real HTTP
server on 127.0.0.1 answering what OpenAI answers: a fake only at the network edge.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ports import free_port
from pydantic import SecretStr

from appforge.core.settings import OpenAISettings, Settings
from providers.base import ChatMessage, Completion, Delta, Generation, GenerationParams
from providers.errors import (
    ModelNotFoundError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)
from providers.openai_compat import OpenAICompatProvider
from providers.registry import ProviderRegistry

MODEL = "smollm2"
COUNT: list[ChatMessage] = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Count from 1 to 30, one number per line."},
]
GREEDY = GenerationParams(temperature=0.0, seed=7, max_tokens=12)


def _provider(base_url: str, **settings: Any) -> OpenAICompatProvider:
    return OpenAICompatProvider("openai", OpenAISettings(base_url=base_url, **settings))


def _run(
    provider: OpenAICompatProvider,
    params: GenerationParams,
    cancel: threading.Event | None = None,
) -> tuple[list[Delta], Completion]:
    *deltas, last = _items(provider.stream(MODEL, COUNT, params, cancel))
    assert isinstance(last, Completion)
    assert all(isinstance(d, Delta) for d in deltas)
    return deltas, last  # type: ignore[return-value]


def _items(generation: Generation) -> list[Delta | Completion]:
    """Every delta of a generation, then its completion."""
    with generation:
        items: list[Delta | Completion] = list(generation)
        items.append(generation.result())
    return items


@pytest.fixture(scope="module")
def served(llama_server: str) -> Iterator[OpenAICompatProvider]:
    provider = _provider(llama_server)
    yield provider
    provider.close()


# --- against llama_cpp.server -------------------------------------------------


def test_stream_deltas_concatenate_to_completion_text(served: OpenAICompatProvider) -> None:
    deltas, completion = _run(served, GREEDY)
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == completion.text
    assert completion.text.strip()
    assert completion.model == MODEL
    assert completion.finish_reason == "length"
    assert 0 < completion.timings["ttft_ms"] <= completion.timings["total_ms"]
    # llama_cpp.server ignores stream_options.include_usage: no counts, and we say so.
    assert completion.usage_reported is False
    assert completion.usage.total_tokens == 0


def test_complete_reports_usage(served: OpenAICompatProvider) -> None:
    completion = served.complete(MODEL, COUNT, GREEDY)
    assert completion.usage_reported is True
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert completion.finish_reason == "length"


def test_temperature_zero_with_seed_is_deterministic(served: OpenAICompatProvider) -> None:
    first = served.complete(MODEL, COUNT, GREEDY)
    second = served.complete(MODEL, COUNT, GREEDY)
    _, streamed = _run(served, GREEDY)
    assert first.text == second.text == streamed.text
    assert first.usage == second.usage


def test_stop_sequence_ends_generation(served: OpenAICompatProvider) -> None:
    whole = served.complete(MODEL, COUNT, GREEDY)
    # A word that first appears past the start of the text, so the cut is visible.
    stop = next(w for w in whole.text.split()[1:] if whole.text.index(w) > 3)
    params = GenerationParams(temperature=0.0, seed=7, max_tokens=12, stop=[stop])
    stopped = served.complete(MODEL, COUNT, params)
    assert stopped.finish_reason == "stop"
    assert stopped.text == whole.text[: whole.text.index(stop)]
    deltas, streamed = _run(served, params)
    assert "".join(d.text for d in deltas) == streamed.text == stopped.text
    assert streamed.finish_reason == "stop"


def test_model_params_are_defaults_under_step_params(llama_server: str) -> None:
    provider = _provider(llama_server, model_params={MODEL: {"max_tokens": 3, "temperature": 0}})
    try:
        assert provider.complete(MODEL, COUNT, GenerationParams()).usage.completion_tokens == 3
        step = GenerationParams(max_tokens=5)
        assert provider.complete(MODEL, COUNT, step).usage.completion_tokens == 5
    finally:
        provider.close()


def test_stream_cancel_stops_between_chunks(served: OpenAICompatProvider) -> None:
    cancel = threading.Event()
    params = GenerationParams(temperature=0.0, max_tokens=16)
    with served.stream(MODEL, COUNT, params, cancel) as generation:
        pieces = iter(generation)
        first = next(pieces)
        assert isinstance(first, Delta)
        cancel.set()
        assert list(pieces) == []
        completion = generation.result()
    assert completion.finish_reason == "cancelled"
    assert completion.text == first.text


def test_invalid_key_is_auth_failed_without_leaking_it(
    llama_server_factory: Callable[..., str],
) -> None:
    url = llama_server_factory(api_key="secret-server-key")
    wrong = "sk-wrong-key-0123456789"
    provider = _provider(url, api_key=SecretStr(wrong))
    right = _provider(url, api_key=SecretStr("secret-server-key"))
    try:
        with pytest.raises(ProviderAuthError) as info:
            provider.complete(MODEL, COUNT, GREEDY)
        assert info.value.code == "PROVIDER_AUTH_FAILED"
        with pytest.raises(ProviderAuthError):
            _items(provider.stream(MODEL, COUNT, GREEDY))
        shown = f"{info.value} {info.value!r} {info.value.details}"
        assert wrong not in shown and "secret-server-key" not in shown
        assert right.complete(MODEL, COUNT, GREEDY).text
    finally:
        provider.close()
        right.close()


# --- servers that are down -----------------------------------------------------


def test_closed_port_is_unavailable_fast() -> None:
    provider = _provider(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError) as info:
        _items(provider.stream(MODEL, COUNT, GREEDY))
    assert time.monotonic() - started < 5
    assert info.value.code == "PROVIDER_UNAVAILABLE"
    assert info.value.status_code == 503
    assert "cannot connect" in info.value.message
    with pytest.raises(ProviderUnavailableError):
        provider.complete(MODEL, COUNT, GREEDY)
    assert provider.ping(1.0).reachable is False


def test_silent_server_is_bounded_by_timeout() -> None:
    # Accepts connections (the kernel's backlog) but never answers.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        provider = _provider(f"http://127.0.0.1:{port}/v1", timeout=0.5, max_retries=0)
        started = time.monotonic()
        with pytest.raises(ProviderUnavailableError) as info:
            _items(provider.stream(MODEL, COUNT, GREEDY))
        elapsed = time.monotonic() - started
        provider.close()
    assert 0.4 < elapsed < 3
    assert "within 0.5 s" in info.value.message


# --- a tiny OpenAI look-alike at the network edge ------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    sse: list[dict[str, Any]] | None = None


@dataclass
class EdgeServer:
    url: str
    replies: list[Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


@pytest.fixture
def edge() -> Iterator[EdgeServer]:
    """An HTTP server on 127.0.0.1 answering scripted replies (the last one repeats)."""
    state = EdgeServer(url="", replies=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.requests.append(json.loads(self.rfile.read(length) or b"{}"))
            state.requests[-1]["_authorization"] = self.headers.get("Authorization")
            state.times.append(time.monotonic())
            reply = state.replies[0] if len(state.replies) == 1 else state.replies.pop(0)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.sse is not None:
                data = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in reply.sse)
                data += b"data: [DONE]\n\n"
                self.send_header("Content-Type", "text/event-stream")
            else:
                data = json.dumps(reply.body).encode()
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def _openai_error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def test_unknown_model_is_model_not_found(edge: EdgeServer) -> None:
    # llama_cpp.server serves its model under any name; OpenAI answers 404 like this.
    edge.replies = [
        Reply(404, _openai_error("The model `nope` does not exist.", "model_not_found"))
    ]
    provider = _provider(edge.url, api_key=SecretStr("sk-edge-key-0123"))
    with pytest.raises(ModelNotFoundError) as info:
        _items(provider.stream("nope", COUNT, GREEDY))
    assert info.value.code == "MODEL_NOT_FOUND"
    assert "'nope'" in info.value.message and "does not exist" in info.value.message
    assert len(edge.requests) == 1  # a 404 is not retried
    assert edge.requests[0]["model"] == "nope"
    provider.close()


def test_rate_limit_honours_retry_after_then_fails(edge: EdgeServer) -> None:
    edge.replies = [Reply(429, _openai_error("Slow down."), {"Retry-After": "1"})]
    provider = _provider(edge.url, api_key=SecretStr("sk-edge-key-0123"), max_retries=1)
    with pytest.raises(ProviderRateLimitedError) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert info.value.code == "PROVIDER_RATE_LIMITED"
    assert info.value.details["retry_after"] == "1"
    assert len(edge.requests) == 2  # the first try and one retry
    # The SDK's own backoff would wait 0.375-0.5 s: 1 s means it used Retry-After.
    assert 0.95 <= edge.times[1] - edge.times[0] < 1.5
    provider.close()


def test_server_error_is_retried_then_unavailable(edge: EdgeServer) -> None:
    edge.replies = [
        Reply(503, _openai_error("overloaded"), {"retry-after-ms": "10"}),
        Reply(200, None, sse=[_sse_chunk("ok", None), _sse_chunk(None, "stop")]),
    ]
    provider = _provider(edge.url, max_retries=1)
    *deltas, completion = _items(provider.stream(MODEL, COUNT, GREEDY))
    assert [d.text for d in deltas if isinstance(d, Delta)] == ["ok"]
    assert len(edge.requests) == 2
    edge.replies = [Reply(500, _openai_error("boom"), {"retry-after-ms": "10"})]
    with pytest.raises(ProviderUnavailableError):
        provider.complete(MODEL, COUNT, GREEDY)
    provider.close()


def test_echoed_key_is_masked(edge: EdgeServer) -> None:
    key = "sk-echoed-key-0123456789"
    edge.replies = [Reply(400, _openai_error(f"Bad request for key {key}"))]
    provider = _provider(edge.url, api_key=SecretStr(key))
    with pytest.raises(ProviderError) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert info.value.code == "PROVIDER_ERROR"
    assert key not in f"{info.value} {info.value.details}"
    assert "***" in info.value.message
    assert edge.requests[0]["_authorization"] == f"Bearer {key}"
    provider.close()


def _sse_chunk(text: str | None, finish: str | None, usage: Any = None) -> dict[str, Any]:
    choices = [] if text is None and finish is None else [
        {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    ]  # fmt: skip
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-test",
        "choices": choices,
        "usage": usage,
    }


def test_stream_reads_usage_chunk_and_sends_params(edge: EdgeServer) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    edge.replies = [
        Reply(
            200,
            None,
            sse=[
                _sse_chunk("Hel", None),
                _sse_chunk("lo", None),
                _sse_chunk(None, "stop"),
                _sse_chunk(None, None, usage),  # include_usage: the last chunk, no choices
            ],
        )
    ]
    provider = _provider(edge.url, model_params={"gpt-test": {"temperature": 0.3, "seed": 1}})
    params = GenerationParams(top_p=0.5, max_tokens=8, stop=["\n"], seed=4)
    *deltas, completion = _items(provider.stream("gpt-test", COUNT, params))
    assert [d.text for d in deltas if isinstance(d, Delta)] == ["Hel", "lo"]
    assert isinstance(completion, Completion)
    assert completion.text == "Hello"
    assert completion.usage_reported is True
    assert completion.usage.as_dict() == usage
    sent = edge.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == COUNT
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.3, 0.5, 8)
    assert (sent["stop"], sent["seed"]) == (["\n"], 4)
    assert sent["_authorization"] == "Bearer no-key"  # a keyless server gets a placeholder
    provider.close()


# --- configuration and registry ---------------------------------------------------


def test_check_model_needs_a_key_for_openai_without_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    registry = ProviderRegistry(Settings(home=tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        registry.check("openai:gpt-4o-mini")
    assert "OPENAI_API_KEY" in info.value.message
    registry.close()

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-0123")
    registry = ProviderRegistry(Settings(home=tmp_path))
    provider, model = registry.resolve("openai:gpt-4o-mini")  # no request is made
    assert isinstance(provider, OpenAICompatProvider)
    assert (model, provider.configured) == ("gpt-4o-mini", True)
    registry.close()


def test_registry_serves_named_servers(tmp_path: Path, llama_server: str) -> None:
    settings = Settings(
        home=tmp_path,
        models={"remote": "llamacpp:smollm2"},
        providers={"llamacpp": OpenAISettings(base_url=llama_server)},
    )
    registry = ProviderRegistry(settings)
    assert registry.provider_names() == ["llamacpp", "local", "openai"]
    provider, model = registry.resolve("remote")
    assert isinstance(provider, OpenAICompatProvider) and provider.name == "llamacpp"
    assert provider.complete(model, COUNT, GenerationParams(max_tokens=2)).text
    registry.close()
    with pytest.raises(ValueError, match="taken"):
        Settings(home=tmp_path, providers={"local": OpenAISettings(base_url=llama_server)})


# --- through the API --------------------------------------------------------------

REMOTE_APP = """\
version: 1
name: Remote
type: text
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    model: openai:smollm2
    prompt:
      user: "{{ input.question }}"
    params: {temperature: 0, seed: 7, max_tokens: 12}
output:
  answer: "{{ answer.text }}"
"""


def test_api_run_streams_from_openai_compatible_server(
    make_client: Callable[[Settings], TestClient],
    make_settings: Callable[..., Settings],
    llama_server: str,
) -> None:
    client = make_client(make_settings(openai=OpenAISettings(base_url=llama_server)))
    r = client.post("/api/apps", content=REMOTE_APP, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    url = f"/api/apps/{r.json()['uuid']}/run"
    body = {"input": {"question": "Count from 1 to 30."}, "stream": True}
    with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    pieces = [line["output"]["answer"] for line in lines if "output" in line]
    assert len(pieces) > 1
    done = lines[-1]
    assert done["done"] is True and done["run"]["status"] == "succeeded"

    run = client.get(f"/api/runs/{done['run']['id']}").json()
    assert run["output"]["answer"] == "".join(pieces)
    step = run["steps"][0]
    assert step["model"] == MODEL
    assert step["usage_reported"] is False  # this server streams no usage
    assert step["ttft_ms"] is not None and step["ttft_ms"] <= step["latency_ms"]
    assert run["ttft_ms"] is not None and run["ttft_ms"] <= run["latency_ms"]
