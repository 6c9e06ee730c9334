"""The baseline of ``bench/scale.py``: a bare FastAPI app that streams what appforge's
run endpoint streams, with nothing else (no auth, no database, no templates).

- ``POST /run``: reads ``{"input": {"q": ...}}``, calls the model server at
  ``BENCH_MODEL_URL`` (``.../v1``) with ``stream: true`` through one shared
  ``aiohttp.ClientSession``, and relays its text as NDJSON lines shaped like
  appforge's, ``{"session": {"id"}, "output": {"a": <text>}}``, then the closing
  ``{"session", "run": {"id", "status", "usage", "latency_ms"}, "done": true}``;
- ``POST /run-recorded`` (with ``BENCH_DATABASE_URL``, a PostgreSQL database): the
  relay that also records each run the least a durable, shared record can cost: the
  run's row inserted before the model is called and its output stored after, two
  autocommitted statements on a pool of psycopg async connections (no admission
  count, no session, no auth). It shows what recording alone costs on the machine;
- ``POST /bytes``: the same lines without calling a model (the HTTP and streaming
  floor of FastAPI under uvicorn).

The client is aiohttp, not httpx: at 32 streams in flight an ``httpx.AsyncClient``
relay served 12 runs/s where this one served 71 on the same (busy) machine, and a
baseline braked by its own client would flatter appforge.

Started by ``bench/scale.py`` as
``python -m uvicorn bare_stream:create_app --factory --app-dir bench --workers N``.
"""

from __future__ import annotations

import asyncio
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


_RUNS_TABLE = """CREATE TABLE IF NOT EXISTS bench_runs (
    id text PRIMARY KEY, session_id text NOT NULL, status text NOT NULL, input jsonb NOT NULL,
    output jsonb, usage jsonb, created_at timestamptz NOT NULL, finished_at timestamptz)"""
_INSERT_RUN = (
    "INSERT INTO bench_runs (id, session_id, status, input, created_at)"
    " VALUES (%s, %s, 'running', %s, now())"
)
_FINISH_RUN = (
    "UPDATE bench_runs SET status = 'succeeded', output = %s, usage = %s, finished_at = now()"
    " WHERE id = %s"
)


class _Pool:
    """A few autocommit connections to ``BENCH_DATABASE_URL``, opened on first use (the
    table too); a connection a cancelled request left mid-statement is replaced."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._idle: asyncio.Queue[Any] | None = None
        self._opening = asyncio.Lock()

    async def _connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            os.environ["BENCH_DATABASE_URL"], autocommit=True
        )

    async def _open(self) -> asyncio.Queue[Any]:
        async with self._opening:
            if self._idle is None:
                idle: asyncio.Queue[Any] = asyncio.Queue()
                for _ in range(self._size):
                    idle.put_nowait(await self._connect())
                first = await idle.get()
                await first.execute(_RUNS_TABLE)
                idle.put_nowait(first)
                self._idle = idle
            return self._idle

    async def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        import psycopg

        idle = self._idle or await self._open()
        conn = await idle.get()
        try:
            await conn.execute(sql, params)
        finally:
            if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.close()
                conn = await self._connect()
            idle.put_nowait(conn)


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

    pool = _Pool()

    @app.post("/run-recorded")
    async def run_recorded(request: Request) -> StreamingResponse:
        question = str((await request.json())["input"]["q"])
        session, started = secrets.token_urlsafe(24), time.perf_counter()
        run_id = str(uuid.uuid4())
        await pool.execute(_INSERT_RUN, (run_id, session, json.dumps({"q": question})))

        async def lines() -> AsyncIterator[bytes]:
            text: list[str] = []
            async for item in _model_text(client(), question):
                if isinstance(item, str):
                    text.append(item)
                    yield _line({"session": {"id": session}, "output": {"a": item}})
                else:
                    output = json.dumps({"a": "".join(text)})
                    await pool.execute(_FINISH_RUN, (output, json.dumps(item), run_id))
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
