"""LocalProvider.stream against llama-cpp-python's own streaming chat completion.

Both sides run on the same loaded ``Llama`` object, the same prompt and the
same greedy parameters, so they generate the same tokens; the table shows the
medians over N runs and the ratio ours/direct (time: lower is better, tokens/s:
higher is better). Before each direct run the KV cache is reset, because
LocalProvider evaluates the whole prompt on every call.

    .venv/bin/python bench/providers.py [--runs 10] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appforge.core.settings import LocalModelSettings  # noqa: E402
from providers.base import ChatMessage, GenerationParams  # noqa: E402
from providers.local import LocalProvider  # noqa: E402

MODEL = "smollm2"
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "You are a helpful assistant. Answer in plain prose."},
    {"role": "user", "content": "Explain in a few paragraphs why the sky is blue."},
]


def run_ours(provider: LocalProvider, params: GenerationParams) -> tuple[float, float, int, str]:
    """(ttft ms, total ms, completion tokens, text) of one LocalProvider.stream call."""
    started = time.perf_counter()
    first: float | None = None
    with provider.stream(MODEL, MESSAGES, params) as generation:
        for _ in generation:
            if first is None:
                first = time.perf_counter()
        completion = generation.result()
    finished = time.perf_counter()
    assert first is not None
    return (
        (first - started) * 1000,
        (finished - started) * 1000,
        completion.usage.completion_tokens,
        completion.text,
    )


def run_direct(provider: LocalProvider, params: GenerationParams) -> tuple[float, float, str]:
    """(ttft ms, total ms, text) of one create_chat_completion(stream=True) call."""
    llama = provider.get_llama(MODEL)
    llama.reset()
    started = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    chunks = llama.create_chat_completion(
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=params.temperature or 0.0,
        seed=params.seed,
        max_tokens=params.max_tokens,
        stream=True,
    )
    for chunk in chunks:
        assert not isinstance(chunk, str)
        content = chunk["choices"][0]["delta"].get("content")
        if isinstance(content, str) and content:
            if first is None:
                first = time.perf_counter()
            pieces.append(content)
    finished = time.perf_counter()
    assert first is not None
    return (first - started) * 1000, (finished - started) * 1000, "".join(pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    provider = LocalProvider(LocalModelSettings())
    params = GenerationParams(temperature=0.0, seed=1, max_tokens=args.max_tokens)
    run_ours(provider, params)  # load the model and warm up both paths
    run_direct(provider, params)

    ours_ttft, ours_total, direct_ttft, direct_total = [], [], [], []
    tokens = 0
    for _ in range(args.runs):  # interleaved, so drift hits both sides alike
        ttft, total, tokens, text = run_ours(provider, params)
        ours_ttft.append(ttft)
        ours_total.append(total)
        ttft, total, direct_text = run_direct(provider, params)
        direct_ttft.append(ttft)
        direct_total.append(total)
        if direct_text != text:
            raise SystemExit("ours and direct generated different text; the comparison is void")
    provider.close()

    rows = [
        ("time to first token (ms)", statistics.median(ours_ttft), statistics.median(direct_ttft)),
        ("total time (ms)", statistics.median(ours_total), statistics.median(direct_total)),
        (
            "tokens/s (end to end)",
            tokens / statistics.median(ours_total) * 1000,
            tokens / statistics.median(direct_total) * 1000,
        ),
    ]
    print(f"SmolLM2-135M Q4_1, {args.runs} runs each (median), {tokens} completion tokens, greedy")
    print(f"{'metric':<26} {'ours':>10} {'direct':>10} {'ours/direct':>12}")
    for name, ours, direct in rows:
        print(f"{name:<26} {ours:>10.1f} {direct:>10.1f} {ours / direct:>12.2f}")


if __name__ == "__main__":
    main()
