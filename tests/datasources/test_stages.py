"""No silent wait: an entry being ingested says what it is doing (``stage``), and
readiness says whether the embedding model is loaded yet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Update, event, select
from sqlalchemy.engine import Engine
from waiting import poll_until

from api.app import create_app
from appforge.core.settings import Settings
from datasources.embedding import Embedder
from datasources.tables import Entry
from providers.local import LocalProvider
from tests.conftest import ADMIN_TOKEN
from tests.datasources.support import get_entry, set_values, wait_for_entry

TEXT = " ".join(f"Line {i} of the manual explains step {i}." for i in range(30))


def _state(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.api


def _add_entry(client: TestClient) -> tuple[str, str]:
    ds = client.post(
        "/api/datasources", json={"name": "s", "type": "text", "chunk_size": 120}
    ).json()
    r = client.post(
        f"/api/datasources/{ds['uuid']}/entries",
        json={"entry_data": {"name": "manual", "content": TEXT}},
    )
    assert r.status_code == 201, r.text
    return ds["uuid"], r.json()["uuid"]


@contextmanager
def _stages_written(engine: Engine) -> Iterator[list[str | None]]:
    """Every ``stage`` value the entries table is updated with, in order."""
    written: list[str | None] = []

    def record(conn: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        if isinstance(clause, Update) and clause.table.name == "datasource_entries":
            values = set_values(clause, [*multiparams, params])
            if "stage" in values:
                written.append(values["stage"])

    event.listen(engine, "before_execute", record)
    try:
        yield written
    finally:
        event.remove(engine, "before_execute", record)


def test_an_entry_goes_through_its_stages_and_ends_with_none(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    # One worker, run here: 4 chunks a batch, so a 12-chunk entry takes 3 batches.
    settings = make_settings(datasources={"workers": 0, "embedding_batch": 1})
    client = make_client(settings)
    ds, entry = _add_entry(client)
    state = _state(client)
    with _stages_written(state.services.engine) as written:
        assert state.ingestion.run_once() == [entry]
    final = get_entry(client, ds, entry)
    total = final["chunks_total"]
    assert final["status"] == "ready" and final["stage"] is None
    assert total > 8  # at least three batches
    embedding = [f"embedding {n}/{total}" for n in range(0, total, 4)]
    # The model was loaded already: the claim says extracting; one write per batch.
    assert written == ["extracting", *embedding, "indexing", None]
    with state.db() as db:  # the column, not only the API's view of it
        assert db.execute(select(Entry.stage).where(Entry.uuid == entry)).scalar() is None


@pytest.fixture
def unloaded_client(
    local_provider: LocalProvider, make_settings: Callable[..., Settings]
) -> Iterator[tuple[TestClient, Embedder]]:
    """The API with one ingestion worker and an embedding model not loaded yet."""
    embedder = Embedder()
    settings = make_settings(datasources={"workers": 1})
    app = create_app(settings, providers={"local": local_provider}, embedder=embedder)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
        yield client, embedder


def _model_check(client: TestClient) -> tuple[int, bool, str | None]:
    r = client.get("/api/health/ready")
    body = r.json()
    checks = body["checks"] if r.status_code == 200 else body["error"]["details"]["checks"]
    check = checks["embedding_model"]
    return r.status_code, check["ok"], check.get("error")


def test_an_entry_shows_loading_model_and_readiness_waits_for_the_model(
    unloaded_client: tuple[TestClient, Embedder],
):
    client, embedder = unloaded_client
    # No datasource when the server started: nothing to load yet, nothing waits.
    assert embedder.state == "idle"
    assert _model_check(client) == (200, True, None)
    # The test holds the model's load lock: the worker's load waits until it lets go.
    with embedder._lock:
        ds, entry = _add_entry(client)
        shown = poll_until(
            lambda: (e := get_entry(client, ds, entry))["stage"] == "loading model" and e,
            detail=lambda: get_entry(client, ds, entry),
        )
        assert shown["status"] == "processing"
        # The claim shows the stage; the worker starts the load right after it.
        poll_until(lambda: embedder.state == "loading", detail=lambda: embedder.state)
        assert _model_check(client) == (503, False, "loading")
    done = wait_for_entry(client, ds, entry)
    assert (done["status"], done["stage"]) == ("ready", None)
    assert embedder.state == "loaded"
    assert _model_check(client) == (200, True, None)


def test_a_server_with_datasources_loads_the_model_when_it_starts(
    local_provider: LocalProvider, make_settings: Callable[..., Settings]
):
    settings = make_settings(datasources={"workers": 1})
    first = create_app(settings, providers={"local": local_provider}, embedder=Embedder())
    with TestClient(first) as client:
        client.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
        client.post("/api/datasources", json={"name": "s", "type": "text"})
    # Restarted on the same home, which has a datasource now: the load starts at once.
    embedder = Embedder()
    again = create_app(settings, providers={"local": local_provider}, embedder=embedder)
    with embedder._lock:  # held: the background load is seen in progress
        with TestClient(again) as client:
            assert embedder.state == "loading"
            client.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
            assert _model_check(client) == (503, False, "loading")
    assert embedder.wait_loaded(120) and embedder.state == "loaded"
