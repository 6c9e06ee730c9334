"""A tiny OpenAI-compatible model server that answers at once, for overhead benchmarks.

It serves, on 127.0.0.1 only:

- ``POST /v1/chat/completions``: a fixed short text. Without ``stream`` one
  ``chat.completion`` object; with ``"stream": true`` Server-Sent Events, one
  ``data: {chat.completion.chunk}`` frame for the role, one for the text, one
  with ``finish_reason``, then (when ``stream_options.include_usage`` is true) a
  chunk with empty ``choices`` and ``usage``, then ``data: [DONE]``.
- ``GET /v1/models``: one model, ``fake``.

The request's ``model`` is echoed back; everything else in it is ignored. The
app is plain ASGI (no framework, no validation) under uvicorn with httptools and
uvloop: flat out it serves 10-20k requests/s on one core (50-100 us each); at
the ~100 requests/s of an app-server benchmark, waking up for each request
makes that about 0.5 ms of CPU, some 5% of one core. It is never the
bottleneck of a benchmark that goes through the openai SDK or an app server.
Check it with ``--self-test``, which drives it with ``wrk`` (one thread, 8
connections); ``run_overhead.py`` prints its CPU share during the load.

    python -P bench/fake_openai.py --port 8090          # prints a ready line
    python -P bench/fake_openai.py --port 0             # any free port, named in the ready line
    python -P bench/fake_openai.py --self-test          # requests/s of this server, then exits

The ready line is ``fake_openai ready http://127.0.0.1:<port>/v1`` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOST = "127.0.0.1"
DEFAULT_TEXT = "Hello from the fake model."
PROMPT_TOKENS = 12
COMPLETION_TOKENS = 6
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class FakeOpenAI:
    """The ASGI app: answers precomputed bytes, with only the model name filled in."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.created = int(time.time())
        self.served = 0
        self._models = json.dumps(
            {
                "object": "list",
                "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "bench"}],
            }
        ).encode()

    # -- bodies ---------------------------------------------------------------

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }

    def completion(self, model: str) -> bytes:
        """A whole ``chat.completion`` object."""
        return json.dumps(
            {
                "id": f"chatcmpl-fake{self.served}",
                "object": "chat.completion",
                "created": self.created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.text},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage(),
            }
        ).encode()

    def stream(self, model: str, include_usage: bool) -> bytes:
        """The whole SSE body: role, text, finish, optional usage chunk, ``[DONE]``."""
        base = {
            "id": f"chatcmpl-fake{self.served}",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
        }
        deltas: list[tuple[dict[str, str], str | None]] = [
            ({"role": "assistant", "content": ""}, None),
            ({"content": self.text}, None),
            ({}, "stop"),
        ]
        frames = []
        for delta, finish in deltas:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk: dict[str, Any] = {**base, "choices": [choice]}
            if include_usage:
                chunk["usage"] = None
            frames.append(chunk)
        if include_usage:
            frames.append({**base, "choices": [], "usage": self._usage()})
        parts = [b"data: " + json.dumps(frame).encode() + b"\n\n" for frame in frames]
        parts.append(b"data: [DONE]\n\n")
        return b"".join(parts)

    # -- ASGI -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == "/v1/chat/completions":
            body = b""
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            try:
                request = json.loads(body)
            except ValueError:
                await _answer(send, 400, _JSON_HEADERS, b'{"error": {"message": "bad JSON"}}')
                return
            self.served += 1
            model = str(request.get("model") or "fake")
            if request.get("stream"):
                options = request.get("stream_options") or {}
                data = self.stream(model, bool(options.get("include_usage")))
                await _answer(send, 200, _SSE_HEADERS, data)
            else:
                await _answer(send, 200, _JSON_HEADERS, self.completion(model))
        elif method == "GET" and path == "/v1/models":
            await _answer(send, 200, _JSON_HEADERS, self._models)
        else:
            await _answer(send, 404, _JSON_HEADERS, b'{"error": {"message": "not found"}}')


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


async def serve(port: int, text: str) -> None:
    """Run the server until killed; print the ready line once the socket listens."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    config = uvicorn.Config(
        FakeOpenAI(text),
        host=HOST,
        port=port,
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises why it could not start
            return
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    print(f"fake_openai ready http://{HOST}:{bound}/v1", flush=True)
    await task


def self_test(seconds: float) -> None:
    """Start a server, drive it with wrk (1 thread, 8 connections), print requests/s."""
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("--self-test needs wrk (apt-get install -y wrk)")
    proc = subprocess.Popen(
        [sys.executable, "-P", os.path.abspath(__file__), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://\S+/v1", line)
        if match is None:
            sys.exit(f"no ready line: {line!r}")
        base = match.group(0)
        with tempfile.TemporaryDirectory() as tmp:
            cases = {
                "POST /v1/chat/completions": '{"model": "fake", "messages": []}',
                "POST /v1/chat/completions (stream, usage)": (
                    '{"model": "fake", "messages": [], "stream": true,'
                    ' "stream_options": {"include_usage": true}}'
                ),
            }
            for name, body in cases.items():
                script = os.path.join(tmp, "post.lua")
                with open(script, "w") as f:
                    f.write(
                        'wrk.method = "POST"\n'
                        'wrk.headers["Content-Type"] = "application/json"\n'
                        f"wrk.body = {json.dumps(body)}\n"
                    )
                out = subprocess.run(
                    [
                        wrk,
                        "-t1",
                        "-c8",
                        f"-d{seconds:g}s",
                        "--latency",
                        "-s",
                        script,
                        f"{base}/chat/completions",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
                p50 = re.search(r"50%\s+(\S+)", out)
                errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                print(
                    f"{name:<44} {float(rps.group(1)) if rps else float('nan'):>9.0f} req/s"
                    f"  p50 {p50.group(1) if p50 else '?'} at 8 connections"
                    f"  non-2xx: {errors.group(1) if errors else 0}"
                )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8090, help="0: any free port")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the answer's text")
    parser.add_argument(
        "--self-test",
        type=float,
        nargs="?",
        const=5.0,
        metavar="SECONDS",
        help="measure this server's requests/s with wrk (default 5 s per case) and exit",
    )
    args = parser.parse_args()
    if args.self_test is not None:
        self_test(args.self_test)
        return
    try:
        asyncio.run(serve(args.port, args.text))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
