"""OpenAICompatProvider against a real llama_cpp.server on 127.0.0.1.

Behaviours llama_cpp.server cannot show (it serves any model name, never
rate-limits, sends no usage in streams, never breaks off) are checked against a
tiny real HTTP server on 127.0.0.1 answering what OpenAI answers
(tests/openai_edge.py): a fake only at the network edge.

Retry waits go through a fake clock and sleep given to the provider: tests
check the waits it asked for and the requests the edge server saw, never how
long anything took.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai_edge import (
    EdgeServer,
    FakeTime,
    Reply,
    completion_body,
    drain,
    is_backoff,
    make_provider,
    openai_error,
    sse_chunk,
)
from ports import free_port
from pydantic import SecretStr

from appforge.core.settings import OpenAISettings, Settings
from providers.base import ChatMessage, Completion, Delta, GenerationParams
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


def _run(
    provider: OpenAICompatProvider,
    params: GenerationParams,
    cancel: threading.Event | None = None,
) -> tuple[list[Delta], Completion]:
    *deltas, last = drain(provider.stream(MODEL, COUNT, params, cancel))
    assert isinstance(last, Completion)
    assert all(isinstance(d, Delta) for d in deltas)
    return deltas, last  # type: ignore[return-value]


@pytest.fixture(scope="module")
def served(llama_server: str) -> Iterator[OpenAICompatProvider]:
    provider = make_provider(llama_server)
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
    provider = make_provider(
        llama_server, model_params={MODEL: {"max_tokens": 3, "temperature": 0}}
    )
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
    provider = make_provider(url, api_key=SecretStr(wrong))
    right = make_provider(url, api_key=SecretStr("secret-server-key"))
    try:
        with pytest.raises(ProviderAuthError) as info:
            provider.complete(MODEL, COUNT, GREEDY)
        assert info.value.code == "PROVIDER_AUTH_FAILED"
        with pytest.raises(ProviderAuthError):
            drain(provider.stream(MODEL, COUNT, GREEDY))
        shown = f"{info.value} {info.value!r} {info.value.details}"
        assert wrong not in shown and "secret-server-key" not in shown
        assert right.complete(MODEL, COUNT, GREEDY).text
    finally:
        provider.close()
        right.close()


# --- servers that are down -----------------------------------------------------


def test_closed_port_is_unavailable_after_retries() -> None:
    timing = FakeTime()
    provider = make_provider(f"http://127.0.0.1:{free_port()}/v1", timing, max_retries=1)
    with pytest.raises(ProviderUnavailableError) as info:
        drain(provider.stream(MODEL, COUNT, GREEDY))
    assert info.value.code == "PROVIDER_UNAVAILABLE"
    assert info.value.status_code == 503
    assert "cannot connect" in info.value.message
    assert len(timing.waits) == 1 and is_backoff(timing.waits)  # a connection error is retried
    with pytest.raises(ProviderUnavailableError):
        provider.complete(MODEL, COUNT, GREEDY)
    assert len(timing.waits) == 2
    assert provider.ping(1.0).reachable is False
    assert len(timing.waits) == 2  # ping never retries


def test_a_key_http_cannot_send_is_a_provider_error_not_a_crash(
    edge: EdgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OPENAI_API_KEY is read as it is (settings check only keys they hold themselves).
    monkeypatch.setenv("APPFORGE_TEST_ODD_KEY", "sk-\u00e9t\u00e9")
    settings = OpenAISettings(base_url=edge.url)
    provider = OpenAICompatProvider("openai", settings, key_env="APPFORGE_TEST_ODD_KEY")
    with pytest.raises(ProviderError) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert "the API key must be one line of printable ASCII" in info.value.message
    assert "\u00e9" not in info.value.message  # the key itself is never said
    reach = provider.ping(1.0)
    assert (reach.reachable, reach.error) == (
        False,
        {"code": "PROVIDER_ERROR", "message": info.value.message},
    )
    assert edge.requests == []  # nothing was sent


def test_silent_server_is_bounded_by_timeout_and_retried() -> None:
    # Accepts connections (the kernel's backlog) but never answers.
    timing = FakeTime()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        provider = make_provider(url, timing, timeout=0.3, max_retries=1)
        with pytest.raises(ProviderUnavailableError) as info:
            drain(provider.stream(MODEL, COUNT, GREEDY))
        provider.close()
    assert "within 0.3 s" in info.value.message
    assert len(timing.waits) == 1 and is_backoff(timing.waits)  # a timeout is retried


# --- a tiny OpenAI look-alike at the network edge ------------------------------


def test_unknown_model_is_model_not_found(edge: EdgeServer) -> None:
    # llama_cpp.server serves its model under any name; OpenAI answers 404 like this.
    edge.replies = [Reply(404, openai_error("The model `nope` does not exist.", "model_not_found"))]
    provider = make_provider(edge.url, api_key=SecretStr("sk-edge-key-0123"))
    with pytest.raises(ModelNotFoundError) as info:
        drain(provider.stream("nope", COUNT, GREEDY))
    assert info.value.code == "MODEL_NOT_FOUND"
    assert "'nope'" in info.value.message and "does not exist" in info.value.message
    assert len(edge.requests) == 1  # a 404 is not retried
    assert edge.requests[0]["model"] == "nope"
    provider.close()


def test_rate_limit_honours_retry_after_then_fails(edge: EdgeServer, timing: FakeTime) -> None:
    edge.replies = [Reply(429, openai_error("Slow down."), {"Retry-After": "1"})]
    provider = make_provider(edge.url, timing, api_key=SecretStr("sk-edge-key-0123"), max_retries=1)
    with pytest.raises(ProviderRateLimitedError) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert info.value.code == "PROVIDER_RATE_LIMITED"
    assert info.value.details["retry_after"] == "1"
    assert "after 1 retry:" in info.value.message
    assert len(edge.requests) == 2  # the first try and one retry
    assert timing.waits == [1.0]  # Retry-After, not the SDK's 0.375-0.5 s backoff
    provider.close()


def test_server_error_is_retried_then_unavailable(edge: EdgeServer, timing: FakeTime) -> None:
    edge.replies = [
        Reply(503, openai_error("overloaded"), {"retry-after-ms": "10"}),
        Reply(200, None, sse=[sse_chunk("ok", None), sse_chunk(None, "stop")]),
    ]
    provider = make_provider(edge.url, timing, max_retries=1)
    *deltas, completion = drain(provider.stream(MODEL, COUNT, GREEDY))
    assert [d.text for d in deltas if isinstance(d, Delta)] == ["ok"]
    assert len(edge.requests) == 2
    assert timing.waits == [0.01]
    edge.replies = [Reply(500, openai_error("boom"), {"retry-after-ms": "10"})]
    with pytest.raises(ProviderUnavailableError) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert "(500) after 1 retry: boom" in info.value.message
    provider.close()


def test_echoed_key_is_masked(edge: EdgeServer) -> None:
    key = "sk-echoed-key-0123456789"
    edge.replies = [Reply(400, openai_error(f"Bad request for key {key}"))]
    provider = make_provider(edge.url, api_key=SecretStr(key))
    with pytest.raises(ProviderError) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert info.value.code == "PROVIDER_ERROR"
    assert key not in f"{info.value} {info.value.details}"
    assert "***" in info.value.message
    assert edge.requests[0]["_authorization"] == f"Bearer {key}"
    provider.close()


def test_stream_reads_usage_chunk_and_sends_params(edge: EdgeServer) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    edge.replies = [
        Reply(
            200,
            None,
            sse=[
                sse_chunk("Hel", None),
                sse_chunk("lo", None),
                sse_chunk(None, "stop"),
                sse_chunk(None, None, usage),  # include_usage: the last chunk, no choices
            ],
        )
    ]
    provider = make_provider(edge.url, model_params={"gpt-test": {"temperature": 0.3, "seed": 1}})
    params = GenerationParams(top_p=0.5, max_tokens=8, stop=["\n"], seed=4)
    *deltas, completion = drain(provider.stream("gpt-test", COUNT, params))
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


def test_streams_reuse_one_connection(edge: EdgeServer) -> None:
    # Reading past [DONE] to the end of the body hands the connection back to the
    # pool: a run's model call does not pay for a new TCP connection each time.
    edge.replies = [Reply(200, None, sse=[sse_chunk("ok", "stop")])]
    provider = make_provider(edge.url)
    for _ in range(3):
        *_, completion = drain(provider.stream(MODEL, COUNT, GREEDY))
        assert isinstance(completion, Completion) and completion.text == "ok"
    assert len({r["_client_port"] for r in edge.requests}) == 1
    provider.close()


def test_stream_failing_after_its_first_chunk_is_not_retried(
    edge: EdgeServer, timing: FakeTime
) -> None:
    edge.replies = [Reply(200, None, sse=[sse_chunk("Hel", None), sse_chunk("lo", None)], cut=True)]
    provider = make_provider(edge.url, timing, max_retries=3)
    got: list[str] = []
    with pytest.raises(ProviderUnavailableError) as info:
        with provider.stream(MODEL, COUNT, GREEDY) as generation:
            got.extend(delta.text for delta in generation)
    assert got == ["Hel"]
    assert "broke mid-stream" in info.value.message
    assert (len(edge.requests), timing.waits) == (1, [])
    provider.close()


def test_complete_retries_a_body_cut_short(edge: EdgeServer, timing: FakeTime) -> None:
    # A non-streamed answer is read within its try, so a broken body is retried (as the SDK).
    edge.replies = [Reply(200, completion_body("hi"), cut=True), Reply(200, completion_body("hi"))]
    provider = make_provider(edge.url, timing, max_retries=1)
    assert provider.complete(MODEL, COUNT, GREEDY).text == "hi"
    assert len(edge.requests) == len(timing.waits) + 1 == 2 and is_backoff(timing.waits)
    provider.close()


@pytest.mark.parametrize("how", ["close", "cancel"])
def test_ending_a_generation_mid_stream_hangs_up(edge: EdgeServer, how: str) -> None:
    edge.replies = [
        Reply(200, None, sse=[sse_chunk("one", None), sse_chunk("two", None)], hold=True)
    ]
    provider = make_provider(edge.url)
    cancel = threading.Event()
    with provider.stream(MODEL, COUNT, GREEDY, cancel) as generation:
        pieces = iter(generation)
        assert next(pieces) == Delta("one")  # the server holds the rest back
        if how == "cancel":
            cancel.set()
            assert list(pieces) == []
            assert generation.result().finish_reason == "cancelled"
    # The server waits on the connection: it sees it closed (not at its 30 s limit).
    assert edge.hung_up.wait(20)
    provider.close()


def test_stalled_stream_is_unavailable_after_timeout(edge: EdgeServer, timing: FakeTime) -> None:
    edge.replies = [Reply(200, None, sse=[sse_chunk("one", None), sse_chunk(".", None)], hold=True)]
    provider = make_provider(edge.url, timing, timeout=0.3, max_retries=2)
    got: list[str] = []
    with pytest.raises(ProviderUnavailableError) as info:
        with provider.stream(MODEL, COUNT, GREEDY) as generation:
            got.extend(delta.text for delta in generation)
    assert got == ["one"]
    assert "no chunk within 0.3 s" in info.value.message
    assert (len(edge.requests), timing.waits) == (1, [])  # past the first byte: no retry
    provider.close()


def test_stream_error_event_is_a_provider_error(edge: EdgeServer, timing: FakeTime) -> None:
    key = "sk-edge-key-0123456789"
    failing = [sse_chunk("a", None), {"error": {"message": f"overloaded for {key}"}}]
    edge.replies = [Reply(200, None, sse=failing)]
    provider = make_provider(edge.url, timing, api_key=SecretStr(key))
    with pytest.raises(ProviderError) as info:
        drain(provider.stream(MODEL, COUNT, GREEDY))
    assert info.value.code == "PROVIDER_ERROR"
    assert "overloaded for ***" in info.value.message
    assert len(edge.requests) == 1
    provider.close()


def test_ping_is_one_try(edge: EdgeServer, timing: FakeTime) -> None:
    edge.replies = [Reply(503, openai_error("down"))]
    provider = make_provider(edge.url, timing, max_retries=3)
    found = provider.ping(1.0)
    assert found.reachable is False and found.error is not None
    assert found.error["code"] == "PROVIDER_UNAVAILABLE"
    assert (len(edge.requests), timing.waits) == (1, [])
    edge.replies = [Reply(200, {"object": "list", "data": [{"id": "a"}, {"id": "b"}]})]
    assert provider.ping(1.0).models == ["a", "b"]
    assert edge.requests[-1]["_path"] == "/v1/models"
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
