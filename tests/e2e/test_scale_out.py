"""Scale-out, as an operator runs it: two API processes and ingestion workers on one
PostgreSQL database, a ``chroma run`` server and Redis.

Two ``appforge serve --no-worker`` processes on their own ports (each with its own
home folder, so nothing is shared through files) and ``appforge worker`` processes
share a database made for this module. Entries added through one API process are
ingested by a worker and found through the other; runs, sessions and rate limits are
shared; a worker killed with SIGKILL in the middle of an entry loses nothing: the next
worker takes the entry over when its lease ends and finishes every entry exactly once.
A token revoked through one API process is refused by the other at once.

The model is a fake OpenAI-compatible server on 127.0.0.1 (the network edge);
everything behind it is real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import httpx
import psycopg
import pytest
from fake_model import FakeModel, serve_model
from server_process import ServerProcess
from waiting import poll_until

from appforge.core.db import make_engine, migrate
from datasources.index import collection_name

pytestmark = pytest.mark.postgres

PG_SERVER = os.environ.get("APPFORGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
# A Redis database of this module's own: rate-limit buckets of other tests stay apart.
REDIS = "redis://127.0.0.1:6379/7"
TOKEN = "af_scale_out_admin_token_0123456789"
AUTH = {"Authorization": f"Token {TOKEN}"}
# The killed worker's lease: how long its entry waits for the next worker. Short, so the
# test does not wait; safe, since that worker runs alone with one thread (its claims
# last as long as it works: nothing else claims them). The next worker keeps the
# default lease, far longer than any step takes on a loaded machine.
FIRST_LEASE_SECONDS = "3"

CHAT_APP = """\
version: 1
name: Chatter
type: chat
input:
  q: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{ input.q }}"
    history: 4
output:
  answer: "{{ answer.text }}"
"""

# One sentence per chunk (the datasource's chunk_size is 60): a dozen chunks, so a
# worker's batches of 4 leave it half-way through for a while.
LONG_ENTRY = "\n\n".join(f"Section {n} of the field manual covers drill {n}." for n in range(12))
SHORT_ENTRIES = {
    "lighthouse": "The lighthouse keeper polishes the brass lamp at dusk.",
    "bread": "Sourdough bread rises with a starter of flour and water.",
    "glacier": "Glaciers carve deep valleys as they creep downhill.",
}


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    model: FakeModel
    env: dict[str, str]
    database: str  # a libpq URL of the module's database
    chroma: str
    tmp: Path


def _worker(env: dict[str, str], home: Path, log: Any, **more: str) -> subprocess.Popen[bytes]:
    """``appforge worker --only ingest`` with its own home; output to ``log``."""
    exe = Path(sys.executable).parent / "appforge"
    full = {**os.environ, **env, "APPFORGE_HOME": str(home), **more}
    return subprocess.Popen(
        [str(exe), "worker", "--only", "ingest"], env=full, stdout=log, stderr=subprocess.STDOUT
    )


def _read(log: Any) -> str:
    log.flush()
    log.seek(0)
    return str(log.read().decode(errors="replace"))


@pytest.fixture(scope="module")
def cluster(chroma_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    name = f"appforge_scale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database = f"{PG_SERVER}/{name}"
    servers: list[ServerProcess] = []
    try:
        engine = make_engine(database)
        migrate(engine)  # once, before any process starts: none of them races to migrate
        engine.dispose()
        tmp = tmp_path_factory.mktemp("scale_out")
        fake = FakeModel(default="Noted.", replies={"again": "You asked before."}, pause=0.005)
        with serve_model(fake) as model:
            env = {
                "APPFORGE_DATABASE_URL": database,
                "APPFORGE_CHROMA_URL": chroma_server,
                "APPFORGE_REDIS_URL": REDIS,
                "APPFORGE_SECRET_KEY": "scale-out-test-server-key-0123456789abcdef",
                "APPFORGE_ADMIN_TOKEN": TOKEN,
                "APPFORGE_OPENAI__BASE_URL": model.url,
                "APPFORGE_OPENAI__API_KEY": "fake",
                "APPFORGE_MODELS": json.dumps({"default": "openai:fake"}),
                # The server's own rate stays out of the way of the polling below; the
                # runner token of the rate-limit test has its own.
                "APPFORGE_RATE_LIMIT__BURST": "100000",
                "APPFORGE_RATE_LIMIT__REQUESTS": "100000",
                "APPFORGE_DATASOURCES__POLL_SECONDS": "0.2",
                # Far longer than any wait here: a revocation must arrive by notification.
                "APPFORGE_AUTH__CACHE_SECONDS": "300",
                "ANONYMIZED_TELEMETRY": "False",
            }
            # Both at once, as a deployment starts them (the admin token is made once).
            with ThreadPoolExecutor(2) as pool:
                started = [
                    pool.submit(
                        ServerProcess, {**env, "APPFORGE_HOME": str(tmp / label)}, ("--no-worker",)
                    )
                    for label in ("home-a", "home-b")
                ]
            servers.extend(f.result() for f in started if f.exception() is None)
            for future in started:
                if future.exception() is not None:
                    raise RuntimeError("an API process did not start") from future.exception()
            yield Cluster(servers[0], servers[1], model, env, database, chroma_server, tmp)
    finally:
        for server in servers:
            server.stop()
        with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _post(
    base: str, path: str, body: Any, headers: dict[str, str] = AUTH, timeout: float = 60
) -> Any:
    r = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=timeout)
    assert r.status_code in (200, 201), r.text
    return r.json()


def _entries(base: str, ds: str) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{base}/api/datasources/{ds}/entries", headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return {e["uuid"]: e for e in r.json()}


def _waiting_on_a_lock(database: str) -> bool:
    """Whether a session of the module's database waits for a lock while it writes
    keyword rows: the worker, at the row the test holds. (Any lock wait was taken for
    it, and the processes' own brief waits, for one another's heartbeats say, came
    first on a busy machine: the entry was not yet embedding.)"""
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO datasource_chunks%'"
        ).fetchone()
    return bool(row and row[0])


def _chunk_ids(chroma: str, ds: str) -> dict[str, list[str]]:
    """The vector ids in the Chroma server, by entry."""
    host, port = chroma.rsplit(":", 1)
    client = chromadb.HttpClient(
        host=host.removeprefix("http://"),
        port=int(port),
        settings=chromadb.config.Settings(anonymized_telemetry=False),
    )
    try:
        collection = client.get_collection(collection_name(ds))
    except chromadb.errors.NotFoundError:  # nothing written to it yet
        return {}
    got = collection.get(include=["metadatas"])
    ids: dict[str, list[str]] = {}
    for chunk_id, meta in zip(got["ids"], got["metadatas"] or [], strict=True):
        ids.setdefault(str(meta["entry_uuid"]), []).append(chunk_id)
    return ids


def _keyword_rows(database: str, ds: str) -> dict[str, list[str]]:
    """The keyword index's committed rows, by entry."""
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT entry_uuid, chunk_id FROM datasource_chunks WHERE datasource_uuid = %s",
            (ds,),
        ).fetchall()
    found: dict[str, list[str]] = {}
    for entry_uuid, chunk_id in rows:
        found.setdefault(entry_uuid, []).append(chunk_id)
    return found


def test_a_killed_worker_loses_nothing_and_entries_are_found_through_the_other_process(
    cluster: Cluster,
):
    a, b = cluster.a.base, cluster.b.base
    source = {"name": "manual", "type": "text", "chunk_size": 60, "chunk_overlap": 0}
    ds = _post(a, "/api/datasources", source)["uuid"]
    # The long entry first: the worker claims the oldest entry.
    add = f"/api/datasources/{ds}/entries"
    long = _post(a, add, {"entry_data": {"name": "manual", "content": LONG_ENTRY}})
    short = {
        key: _post(a, add, {"entry_data": {"name": key, "content": text}})
        for key, text in SHORT_ENTRIES.items()
    }
    # Process B loads its embedding model for searches meanwhile (a machine has cores
    # enough to overlap it with the workers' loads). The first search waits for the
    # load: a minute or more on a busy machine.
    warmed: list[Any] = []
    search = (b, f"/api/datasources/{ds}/search", {"query": "x", "mode": "vector"}, AUTH, 600)
    warm = threading.Thread(target=lambda: warmed.append(_post(*search)), daemon=True)
    warm.start()
    # A keyword row holding the id of the long entry's 5th chunk, in a transaction left
    # open: the worker's insert of that chunk waits for it, in the middle of the entry
    # (its first chunks indexed, the rest not). It names another entry, so the long
    # entry's row itself is not locked and the worker can claim it.
    blocker = psycopg.connect(cluster.database)
    with tempfile.TemporaryFile() as log:  # closed however the test ends
        try:
            blocker.execute(
                "INSERT INTO datasource_chunks (chunk_id, datasource_uuid, entry_uuid, text,"
                " chunk_metadata) VALUES (%s, %s, %s, 'blocker', '{}')",
                (f"{long['uuid']}:4", ds, short["bread"]["uuid"]),
            )
            first = _worker(
                cluster.env,
                cluster.tmp / "worker-1",
                log,
                APPFORGE_DATASOURCES__WORKERS="1",
                APPFORGE_DATASOURCES__EMBEDDING_BATCH="1",  # 4 chunks per batch
                APPFORGE_DATASOURCES__LEASE_SECONDS=FIRST_LEASE_SECONDS,
                # The held row must hold the worker however long this machine takes
                # to see it waiting: no lock or statement timeout (the product's give
                # up at 10 s and 60 s).
                APPFORGE_POSTGRES__LOCK_TIMEOUT_SECONDS="0",
                APPFORGE_POSTGRES__STATEMENT_TIMEOUT_SECONDS="0",
            )
            try:
                poll_until(
                    lambda: _waiting_on_a_lock(cluster.database) or first.poll() is not None,
                    timeout=300,
                    interval=0.2,
                    detail=lambda: _read(log),
                )
                assert first.poll() is None, _read(log)
                mid = _entries(b, ds)[long["uuid"]]
                assert mid["status"] == "processing"
                assert 0 < mid["chunks_done"] < mid["chunks_total"]
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=30)
            # An entry's chunks are all embedded, then written: keyword rows (where the worker
            # waited when it was killed), then vectors. So none of its vectors are in Chroma.
            assert long["uuid"] not in _chunk_ids(cluster.chroma, ds)
            blocker.rollback()
        finally:
            blocker.close()
        # A new worker takes every entry, the killed one's once its lease ends.
        second = _worker(cluster.env, cluster.tmp / "worker-2", log)
        try:

            def all_settled() -> dict[str, dict[str, Any]] | None:
                assert second.poll() is None, _read(log)
                entries = _entries(b, ds)
                settled = {e["status"] for e in entries.values()} <= {"ready", "failed"}
                return entries if settled else None

            entries = poll_until(all_settled, timeout=300, interval=0.2, detail=lambda: _read(log))
            assert {e["status"] for e in entries.values()} == {"ready"}, (entries, _read(log))
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0, _read(log)
        finally:
            if second.poll() is None:
                second.kill()
                second.wait(timeout=30)
    assert entries[long["uuid"]]["attempts"] == 2  # the killed worker's, then the new one's
    assert {e["attempts"] for k, e in entries.items() if k != long["uuid"]} == {1}
    vectors, keywords = _chunk_ids(cluster.chroma, ds), _keyword_rows(cluster.database, ds)
    for entry_uuid, entry in entries.items():
        expected = sorted(f"{entry_uuid}:{n}" for n in range(entry["chunks_total"]))
        assert sorted(vectors[entry_uuid]) == expected  # none lost, none twice
        assert sorted(keywords[entry_uuid]) == expected
    assert entries[long["uuid"]]["chunks_total"] == 12
    warm.join(timeout=600)
    assert warmed, "the first search through process B failed"
    # Found through the other API process, by meaning (the query's words are not the text's).
    search = {"query": "how do I bake a loaf with a starter", "top_k": 1, "mode": "vector"}
    hits = _post(b, f"/api/datasources/{ds}/search", search)["results"]
    assert hits[0]["metadata"]["entry_uuid"] == short["bread"]["uuid"]


def test_runs_and_sessions_are_shared_by_the_api_processes(cluster: Cluster):
    a, b = cluster.a.base, cluster.b.base
    app = httpx.post(
        f"{a}/api/apps",
        content=CHAT_APP,
        headers={**AUTH, "Content-Type": "application/yaml"},
        timeout=60,
    ).json()["uuid"]
    first = _post(b, f"/api/apps/{app}/run", {"input": {"q": "Remember the number 7."}})
    session = first["session"]["id"]
    lines: list[dict[str, Any]] = []
    body = {"input": {"q": "What did I ask you again?"}, "stream": True}
    with httpx.stream(
        "POST", f"{a}/api/apps/{app}/run/{session}", json=body, headers=AUTH, timeout=60
    ) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert "".join(line["output"]["answer"] for line in lines[:-1]) == "You asked before."
    assert lines[-1]["done"] is True and lines[-1]["session"]["id"] == session
    # Process A gave the model the turn process B stored.
    messages = cluster.model.requests[-1]["messages"]
    assert [m["content"] for m in messages] == [
        "Remember the number 7.",
        "Noted.",
        "What did I ask you again?",
    ]
    turns = httpx.get(f"{b}/api/sessions/{session}", headers=AUTH, timeout=60).json()["turns"]
    assert [t["run_id"] for t in turns] == [first["run"]["id"], lines[-1]["run"]["id"]]
    for base, run in ((a, first["run"]["id"]), (b, lines[-1]["run"]["id"])):
        stored = httpx.get(f"{base}/api/runs/{run}", headers=AUTH, timeout=60).json()
        assert stored["status"] == "succeeded"


def test_rate_limits_are_shared_by_the_api_processes(cluster: Cluster):
    a, b = cluster.a.base, cluster.b.base
    body = {"name": "limited", "role": "runner", "rate_limit": "3/hour"}
    runner = _post(a, "/api/tokens", body)["token"]
    headers = {"Authorization": f"Token {runner}"}
    codes = [
        httpx.get(f"{base}/api/tokens/me", headers=headers, timeout=60).status_code
        for base in (a, b, a, b, a, b)
    ]
    assert codes == [200, 200, 200, 429, 429, 429]


def test_a_token_revoked_through_one_process_is_refused_by_the_other(cluster: Cluster):
    a, b = cluster.a.base, cluster.b.base
    created = _post(a, "/api/tokens", {"name": "leaving", "role": "viewer"})
    headers = {"Authorization": f"Token {created['token']}"}
    assert httpx.get(f"{b}/api/tokens/me", headers=headers, timeout=60).status_code == 200
    gone = httpx.delete(f"{a}/api/tokens/{created['id']}", headers=AUTH, timeout=60)
    assert gone.status_code == 204
    # B cached the token for 300 s: only the notification can make it refuse it sooner.
    poll_until(
        lambda: httpx.get(f"{b}/api/tokens/me", headers=headers, timeout=60).status_code == 401,
        timeout=60,
    )
