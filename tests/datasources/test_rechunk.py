"""New chunk settings re-ingest a datasource's entries through the queue; the old
chunks stay searchable until each entry's new ones replace them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Update, event

from appforge.core.settings import Settings
from tests.datasources.support import Pages, get_entry, set_values

TEXT = " ".join(f"Step {i} of the heater manual sets dial {i} to level {i}." for i in range(40))


def _state(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.api


def _search(client: TestClient, ds: str, query: str, mode: str = "hybrid") -> list[dict[str, Any]]:
    r = client.post(
        f"/api/datasources/{ds}/search", json={"query": query, "mode": mode, "top_k": 100}
    )
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()["results"]
    return hits


def _stored(client: TestClient, ds: str, entry: str) -> tuple[int, int]:
    store = _state(client).datasources
    return store.index.count(ds, entry), store.keywords.count(ds, entry)


def test_new_chunk_settings_reingest_with_old_chunks_searchable_meanwhile(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"workers": 0}))
    ds = client.post(
        "/api/datasources", json={"name": "m", "type": "text", "chunk_size": 600}
    ).json()["uuid"]
    entry = client.post(
        f"/api/datasources/{ds}/entries", json={"entry_data": {"name": "heater", "content": TEXT}}
    ).json()["uuid"]
    queue = _state(client).ingestion
    assert queue.run_once() == [entry]
    old = get_entry(client, ds, entry)["chunks_total"]
    assert _stored(client, ds, entry) == (old, old)

    # The same settings, or only the search mode: nothing to re-ingest.
    same = client.patch(f"/api/datasources/{ds}", json={"chunk_size": 600, "search_mode": "vector"})
    assert same.status_code == 200 and same.json()["requeued"] == 0
    assert same.json()["search_mode"] == "vector"
    r = client.patch(f"/api/datasources/{ds}", json={"chunk_size": 150, "chunk_overlap": 0})
    assert r.status_code == 200, r.text
    assert r.json()["requeued"] == 1 and r.json()["chunk_size"] == 150
    assert get_entry(client, ds, entry)["status"] == "pending"
    # Still searchable, on the old chunks, until the new ones are in.
    waiting = _search(client, ds, "dial 7 level 7")
    assert waiting and all(len(h["text"]) > 150 for h in waiting)

    stages: list[str | None] = []

    def record(conn: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        if isinstance(clause, Update) and clause.table.name == "datasource_entries":
            values = set_values(clause, [*multiparams, params])
            if "stage" in values:
                stages.append(values["stage"])

    engine = _state(client).services.engine
    event.listen(engine, "before_execute", record)
    try:
        assert queue.run_once() == [entry]
    finally:
        event.remove(engine, "before_execute", record)
    assert stages[0] == "extracting" and stages[-1] is None
    assert any(str(s).startswith("embedding ") for s in stages)
    done = get_entry(client, ds, entry)
    new = done["chunks_total"]
    assert done["status"] == "ready" and new > old
    assert _stored(client, ds, entry) == (new, new)  # old ones past the new count gone
    hits = _search(client, ds, "dial 7 level 7", "vector") + _search(client, ds, "dial", "keyword")
    assert hits and all(len(h["text"]) <= 150 for h in hits)
    assert (
        sorted(int(h["id"].rsplit(":", 1)[1]) for h in _search(client, ds, "dial", "keyword"))[-1]
        < new
    )
    events = client.get("/api/audit", params={"action": "datasource.updated"}).json()
    assert [e["details"]["changed"] for e in events][0] == ["chunk_overlap", "chunk_size"]


def test_chunk_settings_refused_when_invalid_and_a_failed_reingest_keeps_chunks(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    settings = make_settings(datasources={"workers": 0, "url_allowlist": ["127.0.0.1"]})
    client = make_client(settings)
    ds = client.post("/api/datasources", json={"name": "w", "type": "url"}).json()["uuid"]
    url = pages.add("/heater", f"<html><body><p>{TEXT}</p></body></html>".encode())
    entry = client.post(
        f"/api/datasources/{ds}/entries", json={"entry_data": {"name": "heater", "url": url}}
    ).json()["uuid"]
    queue = _state(client).ingestion
    assert queue.run_once() == [entry]
    before = get_entry(client, ds, entry)
    path = f"/api/datasources/{ds}"
    for bad, code in (
        ({"chunk_overlap": 1000}, "CHUNK_SETTINGS_INVALID"),  # the default size is 1000
        ({"chunk_size": 10}, "VALIDATION_ERROR"),
        ({"name": "renamed"}, "VALIDATION_ERROR"),
        ({"search_mode": "fuzzy"}, "VALIDATION_ERROR"),
    ):
        r = client.patch(path, json=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert client.get(path).json()["chunk_overlap"] is None  # nothing stored half-way
    assert client.get(path).json()["entries"] == {"ready": 1}
    missing = client.patch("/api/datasources/nope", json={"chunk_size": 100})
    assert missing.status_code == 404

    pages.routes["/heater"] = (404, {"Content-Type": "text/plain"}, b"gone")
    assert client.patch(path, json={"chunk_size": 200}).json()["requeued"] == 1
    assert queue.run_once() == [entry]
    after = get_entry(client, ds, entry)
    assert after["status"] == "ready" and after["error"].startswith("FETCH_FAILED")
    assert after["chunks_total"] == before["chunks_total"]
    total = before["chunks_total"]
    assert _stored(client, ds, entry) == (total, total)
    assert _search(client, ds, "dial 7 level 7")
