"""A Chroma server that goes away and comes back: clear 503s, nothing deleted half-way,
no entry failed for it; and a server that is not up yet when the API starts."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chroma_process import ChromaProcess
from fastapi.testclient import TestClient
from ports import free_port
from sqlalchemy import delete, select
from waiting import poll_until

from appforge.core.settings import Settings
from datasources.errors import VectorStoreUnavailableError
from datasources.tables import Entry, VectorDeletion
from tests.datasources.support import assert_given_back, get_entry

RAG_APP = """version: 1
name: Outage
type: text
input:
  q: {type: string}
steps:
  - id: docs
    kind: retrieve
    datasources: [kb]
    query: "{{ input.q }}"
  - id: answer
    kind: llm
    prompt: {user: "{{ docs.documents|length }} {{ input.q }}"}
    params: {max_tokens: 4}
output:
  answer: "{{ answer.text }}"
"""
UNAVAILABLE = "VECTOR_STORE_UNAVAILABLE"


def _state(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.api


def _add(client: TestClient, ds: str, name: str, text: str) -> str:
    made = client.post(
        f"/api/datasources/{ds}/entries", json={"entry_data": {"name": name, "content": text}}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["uuid"])


def _code(answer: Any, status: int) -> str:
    assert answer.status_code == status, answer.text
    return str(answer.json()["error"]["code"])


@pytest.fixture
def chroma_api(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    tmp_path: Path,
) -> Iterator[tuple[ChromaProcess, TestClient]]:
    """A real ``chroma run`` server of the test's own, and the API on it (no ingestion
    threads: the test runs the queue's rounds itself)."""
    chroma = ChromaProcess(tmp_path / "chroma", free_port())
    (tmp_path / "chroma").mkdir()
    chroma.start()
    try:
        settings = make_settings(
            database_url=backend, chroma_url=chroma.url, datasources={"workers": 0}
        )
        yield chroma, make_client(settings)
    finally:
        chroma.stop()


def test_a_chroma_server_outage_is_503_loses_nothing_and_entries_wait_for_it(
    chroma_api: tuple[ChromaProcess, TestClient],
):
    chroma, client = chroma_api
    queue, index = _state(client).ingestion, _state(client).services.datasources.index
    made = client.post("/api/datasources", json={"name": "kb", "type": "text"})
    ds = made.json()["uuid"]
    kept = _add(client, ds, "green", "Green tea steeps for two minutes at 80 degrees.")
    assert queue.run_once() == [kept]
    assert get_entry(client, ds, kept)["status"] == "ready"
    app = client.post("/api/apps", content=RAG_APP, headers={"Content-Type": "text/yaml"})
    assert app.status_code == 201, app.text
    run_path = f"/api/apps/{app.json()['uuid']}/run"

    chroma.stop()
    # An entry being embedded when the server goes: given back, not failed.
    waiting = _add(client, ds, "oolong", "Oolong steeps for four minutes at 90 degrees.")
    assert queue.run_once() == [waiting]
    assert_given_back(client, ds, waiting, "waiting for the vector store")
    assert queue.run_once() == []  # the worker waits for the server now
    # Searches, runs and deletions: a clear 503, and nothing deleted.
    search = client.post(f"/api/datasources/{ds}/search", json={"query": "green tea"})
    assert _code(search, 503) == UNAVAILABLE
    assert "127.0.0.1" not in search.text  # where the store is stays in the log
    run = client.post(run_path, json={"input": {"q": "green tea"}})
    assert _code(run, 503) == UNAVAILABLE
    assert run.json()["error"]["details"]["step"] == "docs"
    assert _code(client.delete(f"/api/datasources/{ds}/entries/{kept}"), 503) == UNAVAILABLE
    assert _code(client.delete(f"/api/datasources/{ds}"), 503) == UNAVAILABLE
    assert get_entry(client, ds, kept)["status"] == "ready"
    assert client.get(f"/api/datasources/{ds}").status_code == 200
    ready = client.get("/api/health/ready")
    assert ready.status_code == 503
    assert ready.json()["error"]["details"]["checks"]["vector_store"]["ok"] is False

    chroma.start()  # the same port and data: the server is back
    index.recheck_seconds = 0.0
    assert poll_until(lambda: queue.run_once()) == [waiting]
    assert get_entry(client, ds, waiting)["status"] == "ready"
    assert get_entry(client, ds, waiting)["attempts"] == 1
    found = client.post(f"/api/datasources/{ds}/search", json={"query": "green tea"})
    assert found.json()["results"][0]["metadata"]["entry_uuid"] == kept
    assert client.post(run_path, json={"input": {"q": "oolong"}}).status_code == 200
    assert client.delete(f"/api/datasources/{ds}/entries/{kept}").status_code == 204
    assert index.count(ds, kept) == 0 and index.count(ds, waiting) > 0


def test_the_api_starts_before_its_chroma_server_and_connects_when_it_answers(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
):
    chroma = ChromaProcess(tmp_path, free_port())
    client = make_client(make_settings(chroma_url=chroma.url))
    try:
        assert client.get("/api/health").status_code == 200
        ready = client.get("/api/health/ready")
        assert ready.status_code == 503
        check = ready.json()["error"]["details"]["checks"]["vector_store"]
        assert check["ok"] is False and "no heartbeat from http://127.0.0.1" in check["error"]
        search_nothing = client.post("/api/datasources", json={"name": "early", "type": "text"})
        ds = search_nothing.json()["uuid"]
        answer = client.post(f"/api/datasources/{ds}/search", json={"query": "anything"})
        assert _code(answer, 503) == UNAVAILABLE
        chroma.start()
        _state(client).services.datasources.index.recheck_seconds = 0.0
        assert client.get("/api/health/ready").status_code in (200, 503)  # cached a moment
        found = client.post(f"/api/datasources/{ds}/search", json={"query": "anything"})
        assert found.status_code == 200 and found.json()["results"] == []
    finally:
        chroma.stop()


def test_the_log_names_the_server_without_its_credentials():
    from datasources.index import server_address

    assert server_address("https://ops:s3cret@chroma.internal:8443/x") == (
        "https://chroma.internal:8443"
    )
    assert server_address("http://chroma") == "http://chroma"
    assert server_address(None) == "embedded"


def test_a_hung_chroma_server_is_503_after_the_timeout_not_a_request_for_ever(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
):
    """chromadb's own HTTP client waits for ever, and so does its first call when it
    connects: a stopped (not dead) server held every search, and its thread, until the
    server came back. Now each wait ends after the timeout, connecting included."""
    chroma = ChromaProcess(tmp_path, free_port())
    chroma.start()
    assert chroma.process is not None
    process = chroma.process
    try:
        process.send_signal(signal.SIGSTOP)  # alive, answering nothing
        client = make_client(make_settings(chroma_url=chroma.url, chroma_timeout_seconds=5))
        made = client.post("/api/datasources", json={"name": "hung", "type": "text"})
        search = f"/api/datasources/{made.json()['uuid']}/search"
        # The first call connects: chromadb's client is made only after a heartbeat.
        assert _code(client.post(search, json={"query": "x"}), 503) == UNAVAILABLE
        process.send_signal(signal.SIGCONT)
        _state(client).services.datasources.index.recheck_seconds = 0.0
        assert poll_until(lambda: client.post(search, json={"query": "x"}).status_code == 200)
        process.send_signal(signal.SIGSTOP)  # connected now: its calls are bounded too
        assert _code(client.post(search, json={"query": "x"}), 503) == UNAVAILABLE
    finally:
        process.send_signal(signal.SIGCONT)
        chroma.stop()


def test_a_run_stops_waiting_for_a_hung_chroma_server_at_its_own_deadline(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
):
    """A retrieve step's search waited for the Chroma server's timeout (here 600 s)
    whatever the run's deadline: a run of an app limited to 2 s held its caller and
    its thread for as long as the server hung. Now the run ends at its deadline
    (504 RUN_TIMEOUT, stored ``timeout``), and the server's next answer is found again."""
    chroma = ChromaProcess(tmp_path / "chroma", free_port())
    (tmp_path / "chroma").mkdir()
    chroma.start()
    assert chroma.process is not None
    process = chroma.process
    try:
        settings = make_settings(
            chroma_url=chroma.url, chroma_timeout_seconds=600, datasources={"workers": 0}
        )
        client = make_client(settings)
        queue = _state(client).ingestion
        ds = client.post("/api/datasources", json={"name": "kb", "type": "text"}).json()["uuid"]
        _add(client, ds, "green", "Green tea steeps for two minutes at 80 degrees.")
        assert len(queue.run_once()) == 1
        doc = RAG_APP + "limits: {timeout_seconds: 2}\n"
        app = client.post("/api/apps", content=doc, headers={"Content-Type": "text/yaml"})
        assert app.status_code == 201, app.text
        run_path = f"/api/apps/{app.json()['uuid']}/run"
        assert client.post(run_path, json={"input": {"q": "green tea"}}).status_code == 200

        process.send_signal(signal.SIGSTOP)  # connected, answering nothing
        answers: list[Any] = []
        asking = threading.Thread(
            target=lambda: answers.append(client.post(run_path, json={"input": {"q": "tea"}}))
        )
        asking.start()
        asking.join(300)  # far below the server's 600 s, far above the run's 2 s
        assert not asking.is_alive(), "the run waited for the hung Chroma server"
        (run,) = answers
        assert _code(run, 504) == "RUN_TIMEOUT"
        assert run.json()["error"]["details"]["step"] == "docs"
        stored = client.get(f"/api/runs/{run.json()['error']['details']['run_id']}").json()
        assert stored["status"] == "timeout"

        process.send_signal(signal.SIGCONT)  # the search left behind gets its answer
        again = client.post(run_path, json={"input": {"q": "green tea"}})
        assert again.status_code == 200, again.text
    finally:
        process.send_signal(signal.SIGCONT)
        chroma.stop()


def _entries_found(client: TestClient, ds: str, query: str) -> list[str]:
    found = client.post(f"/api/datasources/{ds}/search", json={"query": query, "top_k": 10})
    assert found.status_code == 200, found.text
    return [hit["metadata"]["entry_uuid"] for hit in found.json()["results"]]


def test_vectors_the_store_missed_at_a_deletion_never_answer_and_are_removed_later(
    chroma_api: tuple[ChromaProcess, TestClient],
):
    """The vector store went away just as an entry's row was deleted: its vectors stayed
    in the store for good, and searches (and runs) went on finding the deleted text.
    Now a search answers only entries still stored, and the refresh job's next round
    removes what the store missed, for entries and whole datasources alike."""
    chroma, client = chroma_api
    state = _state(client)
    store, queue = state.services.datasources, state.ingestion
    index = store.index
    ds = client.post("/api/datasources", json={"name": "kb", "type": "text"}).json()["uuid"]
    other = client.post("/api/datasources", json={"name": "old", "type": "text"}).json()
    gone = _add(client, ds, "green", "Green tea steeps for two minutes at 80 degrees.")
    kept = _add(client, ds, "black", "Black tea steeps for four minutes in boiling water.")
    dropped = _add(client, other["uuid"], "white", "White tea steeps for five minutes.")
    assert sorted(poll_until(lambda: queue.run_once())) == sorted([gone, kept, dropped])

    def away(*_: Any) -> None:  # just before the deletion commits
        chroma.stop()

    store.delete_entry(ds, gone, before_commit=away)
    chroma.start()
    index.recheck_seconds = 0.0
    assert index.count(ds, gone) > 0  # the store missed it
    assert _entries_found(client, ds, "green tea") == [kept]
    store.delete(other["uuid"], before_commit=away)
    chroma.start()
    assert index.count(other["uuid"]) > 0

    state.refresh.run()
    assert index.count(ds, gone) == 0 and index.count(other["uuid"]) == 0
    assert index.count(ds, kept) > 0
    assert store.sweep_deletions() == 0  # nothing left to remove
    assert _entries_found(client, ds, "green tea") == [kept]


def test_a_worker_that_cannot_remove_what_it_wrote_for_a_deleted_entry_leaves_a_note(
    chroma_api: tuple[ChromaProcess, TestClient],
):
    """A worker re-embedding an entry that is deleted meanwhile removes the vectors it
    wrote for it; with the store away at that moment they stayed for good. Now they are
    noted, and the refresh job's sweep removes them once the store is back."""
    chroma, client = chroma_api
    state = _state(client)
    store, queue = state.services.datasources, state.ingestion
    ds = client.post("/api/datasources", json={"name": "kb", "type": "text"}).json()["uuid"]
    entry = _add(client, ds, "green", "Green tea steeps for two minutes at 80 degrees.")
    assert poll_until(lambda: queue.run_once()) == [entry]
    retried = client.post(f"/api/datasources/{ds}/entries/{entry}/retry")
    assert retried.status_code == 200, retried.text
    claimed = queue.claim_work()
    assert [e.uuid for e in claimed] == [entry]
    # The row goes while the worker holds it (the deletion's own removal came before the
    # worker's writes, which the chunks still in the store stand for); then the store.
    with store.db() as db, db.begin():
        db.execute(delete(Entry).where(Entry.uuid == entry))
    chroma.stop()
    with pytest.raises(VectorStoreUnavailableError):
        queue.process(claimed)
    chroma.start()
    store.index.recheck_seconds = 0.0
    assert store.index.count(ds, entry) > 0
    state.refresh.run()
    assert store.index.count(ds, entry) == 0
    assert store.sweep_deletions() == 0


def test_vectors_of_deleted_entries_among_the_nearest_do_not_leave_a_search_short(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    """Vectors of deleted entries that are not removed yet (the store missed them, or a
    killed worker left them) are kept out of answers; when they were the nearest, a
    search answered fewer hits than asked for, or none, though live entries matched.
    Now it asks the index for more until it has ``top_k`` live hits."""
    client = make_client(make_settings(datasources={"workers": 0}))
    state = _state(client)
    store, queue = state.services.datasources, state.ingestion
    ds = client.post("/api/datasources", json={"name": "kb", "type": "text"}).json()["uuid"]
    texts = [f"Green tea steeps for {n} minutes at 80 degrees." for n in ("two", "three", "four")]
    gone = [_add(client, ds, f"green-{n}", text) for n, text in enumerate(texts)]
    kept = [
        _add(client, ds, "black", "Black tea steeps for four minutes in boiling water."),
        _add(client, ds, "oolong", "Oolong tea steeps for three minutes at 90 degrees."),
    ]
    assert sorted(poll_until(lambda: queue.run_once())) == sorted(gone + kept)
    with store.db() as db, db.begin():  # their rows go; their vectors stay
        db.execute(delete(Entry).where(Entry.uuid.in_(gone)))
    assert all(store.index.count(ds, entry) > 0 for entry in gone)
    for top_k in (1, 2):
        found = client.post(
            f"/api/datasources/{ds}/search",
            json={"query": "green tea steeps", "top_k": top_k, "mode": "vector"},
        )
        assert found.status_code == 200, found.text
        entries = [hit["metadata"]["entry_uuid"] for hit in found.json()["results"]]
        assert len(entries) == top_k and set(entries) <= set(kept), entries
    everything = client.post(
        f"/api/datasources/{ds}/search",
        json={"query": "green tea steeps", "top_k": 10, "mode": "vector"},
    )
    assert sorted(h["metadata"]["entry_uuid"] for h in everything.json()["results"]) == sorted(kept)


def _notes(store: Any, entry_uuid: str) -> list[str]:
    with store.db() as db:
        found = db.scalars(
            select(VectorDeletion.id).where(VectorDeletion.entry_uuid == entry_uuid)
        ).all()
    return list(found)


def test_a_note_stands_while_a_worker_writes_vectors_and_a_killed_ones_are_swept(
    chroma_api: tuple[ChromaProcess, TestClient],
):
    """A worker killed after its vectors landed, for an entry deleted while it wrote them
    (the deletion's own removal came before its writes), left them in the store for
    good, with nothing to say so. Now a note stands while a worker writes an entry's
    vectors: dropped once they are written with the entry still stored, and acted on by
    the refresh job's sweep once the entry's row is gone; a live entry's note, and its
    vectors, the sweep leaves alone."""
    chroma, client = chroma_api
    state = _state(client)
    store, queue = state.services.datasources, state.ingestion
    ds = client.post("/api/datasources", json={"name": "kb", "type": "text"}).json()["uuid"]
    entry = _add(client, ds, "green", "Green tea steeps for two minutes at 80 degrees.")
    claimed = queue.claim_work()
    assert [e.uuid for e in claimed] == [entry]
    assert chroma.process is not None
    chroma.process.send_signal(signal.SIGSTOP)  # the worker's write waits for the store
    worker = threading.Thread(target=queue.process, args=(claimed,), daemon=True)
    try:
        worker.start()
        note = poll_until(lambda: _notes(store, entry))  # while it writes
    finally:
        chroma.process.send_signal(signal.SIGCONT)
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert get_entry(client, ds, entry)["status"] == "ready"
    assert _notes(store, entry) == []  # written, the entry still stored: the note went
    assert store.index.count(ds, entry) > 0

    # What a worker killed after its writes leaves: its note and its vectors. The sweep
    # leaves them while the entry is stored; once its row is gone, it removes them.
    second = store.note_writing(claimed[0])
    assert second is not None and second not in note
    state.refresh.run()
    assert _notes(store, entry) == [second] and store.index.count(ds, entry) > 0
    with store.db() as db, db.begin():  # the deletion, its own removal done before
        db.execute(delete(Entry).where(Entry.uuid == entry))
    state.refresh.run()
    assert store.index.count(ds, entry) == 0
    assert _notes(store, entry) == []
