"""OpenAICompatProvider.stream against the openai SDK's streaming, on one local fake server.

The server (this script with ``--serve``, in its own process so it does not
share our GIL) answers every ``POST /v1/chat/completions`` at once with the same
precomputed Server-Sent Events body: ``--chunks`` text chunks shaped like
OpenAI's, a finish chunk, a usage chunk and ``data: [DONE]``. Three clients
read it over keep-alive connections, in turns:

- ``httpx, no parsing``: the bytes only (the floor: HTTP and the server);
- ``provider``: ``OpenAICompatProvider.stream``, deltas then the completion;
- ``openai SDK``: ``OpenAI().chat.completions.create(stream=True)``, reading
  each chunk's ``choices[0].delta.content`` and the usage.

The table gives the median (p50) and p90 time per call, the median divided by
the number of text chunks, and the ratio of the SDK's median to the
provider's (above 1: the provider is faster).

    python -P bench/openai_stream.py [--calls 400] [--chunks 50]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import openai  # noqa: E402
from openai.types.chat import ChatCompletionMessageParam  # noqa: E402

from appforge.core.settings import OpenAISettings  # noqa: E402
from providers.base import ChatMessage, GenerationParams  # noqa: E402
from providers.openai_compat import OpenAICompatProvider  # noqa: E402

MODEL = "gpt-bench"
MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Say fifty words."}]
SDK_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say fifty words."}]


def sse_body(chunks: int) -> bytes:
    """The stream the server sends: role, ``chunks`` words, finish, usage, [DONE]."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000}
    base |= {"model": MODEL, "system_fingerprint": "fp_bench", "service_tier": "default"}

    def chunk(delta: dict[str, str | None], finish: str | None) -> dict[str, object]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], "usage": None}

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": f" word{i}"}, None) for i in range(chunks)]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
    events.append({**base, "choices": [], "usage": usage})
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def serve(port: int, chunks: int) -> None:
    """Answer every POST with the stream, over HTTP/1.1 keep-alive, until killed."""
    body = sse_body(chunks)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    answer = head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.wfile.write(answer)  # one write: status, headers and body

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"ready http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


def start_server(chunks: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-P", __file__, "--serve", "--chunks", str(chunks)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready "):
        process.kill()
        raise SystemExit(f"the fake server did not start: {line!r}")
    return process, line.split()[1]


def contenders(url: str) -> tuple[dict[str, Callable[[], str]], Callable[[], None]]:
    """One call of each client, returning the text it read; and how to close them."""
    raw = httpx.Client(base_url=url)
    provider = OpenAICompatProvider("bench", OpenAISettings(base_url=url))
    sdk = openai.OpenAI(base_url=url, api_key="bench")
    request = {"model": MODEL, "messages": MESSAGES, "stream": True}

    def bytes_only() -> str:
        with raw.stream("POST", "chat/completions", json=request) as response:
            return str(sum(len(part) for part in response.iter_bytes()))

    def ours() -> str:
        with provider.stream(MODEL, MESSAGES, GenerationParams()) as generation:
            parts = [delta.text for delta in generation]
            assert generation.result().usage_reported
        return "".join(parts)

    def theirs() -> str:
        parts = []
        stream = sdk.chat.completions.create(
            model=MODEL, messages=SDK_MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        usage = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        assert usage is not None
        return "".join(parts)

    def close() -> None:
        raw.close()
        provider.close()
        sdk.close()

    clients = {"httpx, no parsing": bytes_only, "provider": ours, "openai SDK": theirs}
    return clients, close


def measure(clients: dict[str, Callable[[], str]], calls: int) -> dict[str, list[float]]:
    """Milliseconds per call of each client, taking turns so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in clients}
    names = list(clients)
    for i in range(calls):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            started = time.perf_counter()
            clients[name]()
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="timed calls per client")
    parser.add_argument("--chunks", type=int, default=50, help="text chunks per stream")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.chunks)
        return
    process, url = start_server(args.chunks)
    clients, close = contenders(url)
    try:
        assert clients["provider"]() == clients["openai SDK"]()  # the same text
        measure(clients, 30)  # warm up: connections, imports, caches
        times = measure(clients, args.calls)
    finally:
        close()
        process.kill()
        process.wait()
    p50 = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.calls} calls per client, {args.chunks} text chunks per stream, {url}")
    print(f"{'client':<20} {'p50 ms':>8} {'p90 ms':>8} {'p50 µs/chunk':>13}")
    for name, values in times.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        per_chunk = p50[name] * 1000 / args.chunks
        print(f"{name:<20} {p50[name]:>8.3f} {p90:>8.3f} {per_chunk:>13.1f}")
    print(f"openai SDK / provider (p50): {p50['openai SDK'] / p50['provider']:.2f}x")


if __name__ == "__main__":
    main()
