"""The baseline of ``bench/scale.py``: a bare FastAPI app that streams what appforge's
run endpoint streams, with nothing else (no auth, no database, no templates).

- ``POST /run``: reads ``{"input": {"q": ...}}``, calls the model server at
  ``BENCH_MODEL_URL`` (``.../v1``) with ``stream: true`` through one shared
  ``aiohttp.ClientSession``, and relays its text as NDJSON lines shaped like
  appforge's, ``{"session": {"id"}, "output": {"a": <text>}}``, then the closing
  ``{"session", "run": {"id", "status", "usage", "latency_ms"}, "done": true}``;
- ``POST /bytes``: the same lines without calling a model (the HTTP and streaming
  floor of FastAPI under uvicorn).

The client is aiohttp, not httpx: at 32 streams in flight an ``httpx.AsyncClient``
relay served 12 runs/s where this one served 71 on the same (busy) machine, and a
baseline braked by its own client would flatter appforge.

Started by ``bench/scale.py`` as
``python -m uvicorn bare_stream:create_app --factory --app-dir bench --workers N``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

SYSTEM = "You are terse."  # harness.SYSTEM: the same prompt appforge's bench app sends
NDJSON = "application/x-ndjson"


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


async def _model_text(session: aiohttp.ClientSession, question: str) -> AsyncIterator[Any]:
    """The model's text deltas, then its usage (a dict) last."""
    payload = {
        "model": "fake",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "seed": 1,
        "max_tokens": 16,
    }
    usage: dict[str, Any] = {}
    base = os.environ.get("BENCH_MODEL_URL", "http://127.0.0.1:8090/v1")
    async with session.post(f"{base}/chat/completions", json=payload) as response:
        async for raw in response.content:  # one SSE line at a time
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text
    yield usage


def create_app() -> FastAPI:
    """The app, with one HTTP session to the model server for all requests (made in the
    event loop, on the first request)."""
    sessions: list[aiohttp.ClientSession] = []
    app = FastAPI()

    def client() -> aiohttp.ClientSession:
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)))
        return sessions[0]

    def closing(session: str, started: float, usage: dict[str, Any]) -> bytes:
        run = {
            "id": str(uuid.uuid4()),
            "status": "succeeded",
            "usage": usage,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        return _line({"session": {"id": session}, "run": run, "done": True})

    @app.post("/run")
    async def run(request: Request) -> StreamingResponse:
        question = str((await request.json())["input"]["q"])
        session, started = secrets.token_urlsafe(24), time.perf_counter()

        async def lines() -> AsyncIterator[bytes]:
            async for item in _model_text(client(), question):
                if isinstance(item, str):
                    yield _line({"session": {"id": session}, "output": {"a": item}})
                else:
                    yield closing(session, started, item)

        return StreamingResponse(lines(), media_type=NDJSON)

    @app.post("/bytes")
    async def fixed(request: Request) -> StreamingResponse:
        await request.body()
        session, started = secrets.token_urlsafe(24), time.perf_counter()
        usage = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}

        async def lines() -> AsyncIterator[bytes]:
            yield _line({"session": {"id": session}, "output": {"a": "Hello from the fake model."}})
            yield closing(session, started, usage)

        return StreamingResponse(lines(), media_type=NDJSON)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
