"""What the unavoidable parts of one durable streamed run cost, with nothing around them.

``bench/scale.py``'s goal is one appforge process at 0.5x the runs per second of
a bare FastAPI relay that keeps nothing (``bench/bare_stream.py``). This prints
the CPU that the pieces every recorded run needs cost on their own, in a tight
loop in this process, so the goal can be read against them:

- **record and store**: a run row inserted and committed, then updated with its
  output and committed (raw psycopg on PostgreSQL, no SQLAlchemy, no pool);
- **model call**: one streamed chat completion from ``bench/fake_openai.py``
  read line by line, with httpx (sync, as appforge's provider) and with aiohttp
  (async, as the bare relay).

CPU is ``time.process_time()`` of this process only (PostgreSQL's and the fake
server's CPU are theirs). Needs PostgreSQL at ``APPFORGE_BENCH_POSTGRES``
(default ``postgresql://postgres@127.0.0.1:5432``); a table is made and dropped
in the ``test`` database.

    python -P bench/floor.py
    python -P bench/floor.py --runs 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

PG_SERVER = os.environ.get("APPFORGE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
TABLE = f"bench_floor_{uuid.uuid4().hex[:8]}"


def cpu_ms_per_call(call: Callable[[], object], runs: int) -> float:
    for _ in range(min(100, runs)):  # warm-up: connections, caches
        call()
    started = time.process_time()
    for _ in range(runs):
        call()
    return (time.process_time() - started) * 1000 / runs


def database_floor(runs: int) -> float:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/test") as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id text PRIMARY KEY, status text, output json)")
        conn.commit()

        def record_and_store() -> None:
            run_id = str(uuid.uuid4())
            conn.execute(f"INSERT INTO {TABLE} (id, status) VALUES (%s, 'running')", (run_id,))
            conn.commit()
            output = json.dumps({"a": h.EXPECTED})
            conn.execute(
                f"UPDATE {TABLE} SET status = 'succeeded', output = %s WHERE id = %s",
                (output, run_id),
            )
            conn.commit()

        try:
            return cpu_ms_per_call(record_and_store, runs)
        finally:
            conn.rollback()
            conn.execute(f"DROP TABLE {TABLE}")
            conn.commit()


def _payload() -> dict[str, object]:
    messages = [{"role": "system", "content": h.SYSTEM}, {"role": "user", "content": h.QUESTION}]
    return {"model": "fake", "messages": messages, "stream": True, "max_tokens": 16}


def httpx_floor(base: str, runs: int) -> float:
    import httpx

    with httpx.Client(base_url=f"{base}/v1") as client:

        def call() -> None:
            with client.stream("POST", "chat/completions", json=_payload()) as response:
                for _ in response.iter_lines():
                    pass

        return cpu_ms_per_call(call, runs)


def aiohttp_floor(base: str, runs: int) -> float:
    import aiohttp

    async def main() -> float:
        async with aiohttp.ClientSession() as session:

            async def call() -> None:
                url = f"{base}/v1/chat/completions"
                async with session.post(url, json=_payload()) as response:
                    async for _ in response.content:
                        pass

            for _ in range(min(100, runs)):
                await call()
            started = time.process_time()
            for _ in range(runs):
                await call()
            return (time.process_time() - started) * 1000 / runs

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fake = h.start_fake(Path(tmp))
        try:
            rows = [
                ("record and store (psycopg: INSERT, COMMIT, UPDATE, COMMIT)", database_floor),
                ("model call, streamed (httpx, sync)", lambda n: httpx_floor(fake.base, n)),
                ("model call, streamed (aiohttp, async)", lambda n: aiohttp_floor(fake.base, n)),
            ]
            print(f"CPU of this process per call, {args.runs} calls each after a warm-up")
            for label, measure in rows:
                print(f"  {label:<62}{measure(args.runs):>7.3f} ms")
        finally:
            fake.stop()


if __name__ == "__main__":
    main()
