"""LocalProvider against the real bundled SmolLM2 model (no mocks)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appforge.core.settings import LocalModelSettings
from providers.base import ChatMessage, Completion, Delta, GenerationParams
from providers.errors import ContextWindowExceededError, ModelNotFoundError, ProviderError
from providers.local import LocalProvider

MODEL = "smollm2"
COUNT: list[ChatMessage] = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Count from 1 to 30, one number per line."},
]
GREEDY = GenerationParams(temperature=0.0, seed=7, max_tokens=24)


def _run(
    provider: LocalProvider,
    params: GenerationParams,
    messages: list[ChatMessage] = COUNT,
    cancel: threading.Event | None = None,
) -> tuple[list[Delta], Completion]:
    with provider.stream(MODEL, messages, params, cancel) as generation:
        deltas = list(generation)
        last = generation.result()
    assert all(isinstance(d, Delta) for d in deltas)
    return deltas, last


def test_stream_deltas_concatenate_to_completion_text(local_provider: LocalProvider) -> None:
    deltas, completion = _run(local_provider, GREEDY)
    assert len(deltas) > 1
    assert all(d.text for d in deltas)
    assert "".join(d.text for d in deltas) == completion.text
    assert completion.text.strip()
    assert completion.model == MODEL
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert 0 < completion.timings["ttft_ms"] <= completion.timings["total_ms"]


def test_stream_temperature_zero_with_seed_is_deterministic(
    local_provider: LocalProvider,
) -> None:
    _, first = _run(local_provider, GREEDY)
    _, second = _run(local_provider, GREEDY)
    assert first.text == second.text
    assert first.usage == second.usage


def test_stream_same_seed_samples_same_text(local_provider: LocalProvider) -> None:
    params = GenerationParams(temperature=0.9, top_p=0.9, seed=1234, max_tokens=16)
    messages: list[ChatMessage] = [{"role": "user", "content": "Tell me about cats."}]
    _, first = _run(local_provider, params, messages)
    _, second = _run(local_provider, params, messages)
    assert first.text == second.text


@pytest.mark.parametrize("max_tokens", [1, 5, 16])
def test_stream_max_tokens_bounds_completion_tokens(
    local_provider: LocalProvider, max_tokens: int
) -> None:
    params = GenerationParams(temperature=0.0, seed=7, max_tokens=max_tokens)
    _, completion = _run(local_provider, params)
    assert completion.usage.completion_tokens == max_tokens
    assert completion.finish_reason == "length"


def _a_later_word(text: str) -> str:
    """A word of ``text`` that does not occur in its first few characters."""
    for word in text.split()[2:]:
        if text.index(word) > 5:
            return word
    raise AssertionError(f"no usable stop word in {text!r}")


def test_stream_stop_sequence_stops_before_it(local_provider: LocalProvider) -> None:
    _, full = _run(local_provider, GREEDY)
    stop = _a_later_word(full.text)
    deltas, stopped = _run(
        local_provider, GenerationParams(temperature=0.0, seed=7, max_tokens=24, stop=[stop])
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.index(stop)]
    assert all(stop not in d.text for d in deltas)
    assert stopped.usage.completion_tokens < full.usage.completion_tokens


def test_stream_multi_character_stop_is_never_streamed(local_provider: LocalProvider) -> None:
    _, full = _run(local_provider, GREEDY)
    stop = full.text[4:8]  # spans several tokens
    deltas, stopped = _run(
        local_provider, GenerationParams(temperature=0.0, seed=7, max_tokens=24, stop=[stop])
    )
    assert stopped.text == full.text[: full.text.index(stop)]
    assert "".join(d.text for d in deltas) == stopped.text


@pytest.mark.parametrize("with_stop", [False, True])
def test_stream_usage_matches_non_streamed_llama_call(
    local_provider: LocalProvider, with_stop: bool
) -> None:
    stop = [_a_later_word(_run(local_provider, GREEDY)[1].text)] if with_stop else None
    # Without a stop word, fewer tokens than the model's whole answer: it ends by length.
    max_tokens = 24 if with_stop else 8
    params = GenerationParams(temperature=0.0, seed=7, max_tokens=max_tokens, stop=stop)
    _, ours = _run(local_provider, params)

    llama = local_provider.get_llama(MODEL)
    llama.reset()  # evaluate the whole prompt, as the provider does
    direct = llama.create_chat_completion(
        messages=COUNT,  # type: ignore[arg-type]
        temperature=0.0,
        seed=7,
        max_tokens=max_tokens,
        stop=stop or [],
    )
    assert isinstance(direct, dict)
    assert ours.text == direct["choices"][0]["message"]["content"]
    assert ours.finish_reason == direct["choices"][0]["finish_reason"]
    assert ours.finish_reason == ("stop" if with_stop else "length")
    assert ours.usage.as_dict() == direct["usage"]
    assert ours.usage.prompt_tokens == len(local_provider.prompt_tokens(MODEL, COUNT))


def test_stream_cancel_mid_stream_stops_early(local_provider: LocalProvider) -> None:
    cancel = threading.Event()
    params = GenerationParams(temperature=0.0, seed=7, max_tokens=32)
    seen: list[str] = []
    with local_provider.stream(MODEL, COUNT, params, cancel) as generation:
        for item in generation:
            seen.append(item.text)
            if len(seen) == 2:
                cancel.set()
        completion = generation.result()
    assert completion.finish_reason == "cancelled"
    assert completion.text == "".join(seen)
    assert 2 <= completion.usage.completion_tokens < 8
    # The lock was released: the provider serves the next call.
    _, after = _run(local_provider, GenerationParams(temperature=0.0, seed=7, max_tokens=2))
    assert after.usage.completion_tokens == 2


def test_stream_abandoned_half_way_frees_the_model_at_once(local_provider: LocalProvider) -> None:
    # A consumer that stops reading and leaves the block (no cancel, no draining)
    # must not keep the model's lock: another thread runs at once.
    params = GenerationParams(temperature=0.0, seed=7, max_tokens=32)
    with local_provider.stream(MODEL, COUNT, params) as generation:
        first = next(iter(generation))
    assert first.text
    # The lock is free the moment the block is left (not when the generator is collected).
    assert local_provider._generate_lock.acquire(blocking=False), "the model is still locked"
    local_provider._generate_lock.release()
    again = local_provider.complete(MODEL, COUNT, GenerationParams(max_tokens=2))
    assert again.usage.completion_tokens == 2


def test_stream_cancel_set_before_start_generates_nothing(local_provider: LocalProvider) -> None:
    cancel = threading.Event()
    cancel.set()
    deltas, completion = _run(local_provider, GREEDY, cancel=cancel)
    assert deltas == []
    assert completion.text == ""
    assert completion.finish_reason == "cancelled"
    assert completion.usage.completion_tokens == 0
    assert completion.usage.prompt_tokens > 0


def test_stream_concurrent_threads_are_serialized(local_provider: LocalProvider) -> None:
    other: list[ChatMessage] = [{"role": "user", "content": "Name three colors."}]
    _, expected_a = _run(local_provider, GREEDY)
    _, expected_b = _run(local_provider, GREEDY, other)

    results: dict[str, Completion] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(key: str, messages: list[ChatMessage]) -> None:
        try:
            start.wait()
            results[key] = _run(local_provider, GREEDY, messages)[1]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=("a", COUNT)),
        threading.Thread(target=worker, args=("b", other)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert results["a"].text == expected_a.text
    assert results["b"].text == expected_b.text
    assert results["a"].usage == expected_a.usage
    assert results["b"].usage == expected_b.usage


def test_complete_returns_the_streamed_completion(local_provider: LocalProvider) -> None:
    _, streamed = _run(local_provider, GREEDY)
    completed = local_provider.complete(MODEL, COUNT, GREEDY)
    assert completed.text == streamed.text
    assert completed.usage == streamed.usage


def test_stream_unknown_model_raises_model_not_found(local_provider: LocalProvider) -> None:
    with pytest.raises(ModelNotFoundError, match="smollm2") as info:
        list(local_provider.stream("llama-70b", COUNT, GREEDY))
    assert info.value.code == "MODEL_NOT_FOUND"
    assert info.value.status_code == 422


def test_stream_prompt_over_context_window_raises(local_provider: LocalProvider) -> None:
    huge: list[ChatMessage] = [{"role": "user", "content": "apple banana " * 2000}]
    with pytest.raises(ContextWindowExceededError, match="context window") as info:
        list(local_provider.stream(MODEL, huge, GREEDY))
    assert isinstance(info.value, ProviderError)
    assert info.value.details["n_ctx"] == 2048
    # The provider still works afterwards.
    assert local_provider.complete(MODEL, COUNT, GREEDY).text


def test_local_provider_missing_file_is_unavailable(tmp_path: Path) -> None:
    provider = LocalProvider(LocalModelSettings(model_path=tmp_path / "missing.gguf"))
    assert not provider.is_available()
    with pytest.raises(ModelNotFoundError, match="missing.gguf"):
        provider.complete(MODEL, COUNT, GREEDY)
    assert not provider.is_loaded
    provider.close()


def test_local_provider_bundled_model_is_available(local_provider: LocalProvider) -> None:
    assert local_provider.is_available()
    path = local_provider.model_path()
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_local_provider_uses_gguf_chat_template(local_provider: LocalProvider) -> None:
    llama = local_provider.get_llama(MODEL)
    assert llama.chat_format == "chat_template.default"
    tokens = local_provider.prompt_tokens(MODEL, COUNT)
    text = llama.detokenize(tokens, special=True).decode()
    assert text.startswith("<|im_start|>system\nYou are a terse assistant.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_local_provider_corrupt_file_raises_provider_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    provider = LocalProvider(LocalModelSettings(model_path=bad))
    assert provider.is_available()
    with pytest.raises(ProviderError, match="bad.gguf") as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert info.value.code == "PROVIDER_ERROR"
    assert not provider.is_loaded


def test_local_provider_settings_close_and_reload() -> None:
    provider = LocalProvider(LocalModelSettings(n_ctx=256, n_threads=1))
    assert not provider.is_loaded
    llama = provider.get_llama(MODEL)
    assert (llama.n_ctx(), llama.n_threads) == (256, 1)
    provider.close()
    assert not provider.is_loaded
    completion = provider.complete(MODEL, COUNT, GenerationParams(temperature=0.0, max_tokens=4))
    assert completion.usage.completion_tokens == 4
    provider.close()
