"""Crash safety: a real `appforge serve` killed with SIGKILL mid-ingestion, restarted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from waiting import poll_until

from tests.conftest import ADMIN_TOKEN
from tests.e2e.server_process import ServerProcess

HEADERS = {"Authorization": f"Token {ADMIN_TOKEN}"}


def _entry(base: str, ds: str, entry: str) -> dict[str, Any]:
    r = httpx.get(f"{base}/api/datasources/{ds}/entries/{entry}", headers=HEADERS, timeout=10)
    body: dict[str, Any] = r.json()
    return body


def test_killed_server_entries_are_finished_after_restart(tmp_path: Path):
    env = {
        "APPFORGE_HOME": str(tmp_path / "home"),
        "APPFORGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "APPFORGE_DATASOURCES__LEASE_SECONDS": "2",
        "APPFORGE_DATASOURCES__EMBEDDING_BATCH": "4",
        "APPFORGE_DATASOURCES__POLL_SECONDS": "0.2",
        # One worker: with a 2 s lease, a second worker of the same process would rightly
        # take over an entry whose step is slow on a busy machine (one more attempt).
        "APPFORGE_DATASOURCES__WORKERS": "1",
    }
    first = ServerProcess(env)
    try:
        base = first.base
        ds = httpx.post(
            f"{base}/api/datasources",
            json={"name": "crash", "type": "text", "chunk_size": 60, "chunk_overlap": 0},
            headers=HEADERS,
        ).json()["uuid"]
        text = " ".join(f"Paragraph {i} says something different." for i in range(200))
        ids = []
        for name, content in (("long", text), ("short", "Nothing special here.")):
            r = httpx.post(
                f"{base}/api/datasources/{ds}/entries",
                json={"entry_data": {"name": name, "content": content}},
                headers=HEADERS,
            )
            assert r.status_code == 201 and r.json()["status"] == "pending"
            ids.append(r.json()["uuid"])

        def half_done() -> dict[str, Any] | None:
            body = _entry(base, ds, ids[0])
            if body["status"] == "processing" and body["chunks_done"] > 0:
                return body
            assert body["status"] != "ready", "finished before it could be killed"
            return None

        body = poll_until(half_done, interval=0.05, detail=lambda: _entry(base, ds, ids[0]))
    finally:
        first.kill()
    assert 0 < body["chunks_done"] < body["chunks_total"]

    second = ServerProcess(env)
    try:

        def states_now() -> list[dict[str, Any]]:
            return [_entry(second.base, ds, e) for e in ids]

        def all_ready() -> list[dict[str, Any]] | None:
            states = states_now()
            assert "failed" not in {s["status"] for s in states}, states
            return states if {s["status"] for s in states} == {"ready"} else None

        states = poll_until(all_ready, interval=0.3, detail=states_now)
        assert states[0]["attempts"] == 2 and states[0]["chunks_done"] == states[0]["chunks_total"]
        # No duplicate vectors: the whole collection holds exactly the chunks.
        r = httpx.post(
            f"{second.base}/api/datasources/{ds}/search",
            json={"query": "Paragraph 5", "top_k": 100, "where": {"name": "long"}},
            headers=HEADERS,
            timeout=30,
        )
        ids_found = [h["id"] for h in r.json()["results"]]
        assert len(ids_found) == len(set(ids_found)) == min(100, states[0]["chunks_total"])
    finally:
        second.stop()
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from datasources.index import collection_name

    client = chromadb.PersistentClient(
        path=str(tmp_path / "home" / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    collection = client.get_collection(collection_name(ds), embedding_function=None)
    assert collection.count() == states[0]["chunks_total"] + states[1]["chunks_total"]
