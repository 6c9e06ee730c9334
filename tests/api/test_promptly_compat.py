"""Promptly's forms: data-URI files, ``session_id`` in the run body; and expiry of
sessions and runs."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from appforge.core.db import utcnow
from appforge.core.settings import Settings
from runs.retention import Retention
from runs.tables import ChatSession, Run, Turn
from tests.datasources.support import make_pdf, wait_for_entry

LOOKUP_APP = """\
version: 1
name: Lookup
type: chat
input:
  q: {type: string, required: true}
steps:
  - id: docs
    kind: retrieve
    datasources: [kb]
    query: "{{ input.q }}"
output:
  sources: "{{ docs.sources }}"
"""


def _datasource(client: TestClient, name: str = "kb") -> str:
    r = client.post("/api/datasources", json={"name": name, "type": "mixed"})
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _add(client: TestClient, ds: str, **data: Any) -> Any:
    return client.post(f"/api/datasources/{ds}/entries", json={"entry_data": data})


def test_entry_file_as_data_uri_takes_media_type_and_name(client: TestClient):
    ds = _datasource(client)
    pdf = base64.b64encode(make_pdf("Descale the kettle every month.")).decode()
    # No suffix in the name and nothing to sniff would do: the media type says PDF.
    r = _add(client, ds, file=f"data:application/pdf;name=Kettle%20manual;base64,{pdf}")
    assert r.status_code == 201, r.text
    entry = wait_for_entry(client, ds, r.json()["uuid"])
    assert (entry["status"], entry["name"], entry["media_type"]) == (
        "ready",
        "Kettle manual",
        "application/pdf",
    )
    hit = client.post(f"/api/datasources/{ds}/search", json={"query": "descale"}).json()
    assert hit["results"][0]["metadata"]["page"] == 1
    # The entry's own name and media type win over the URI's.
    md = base64.b64encode(b"# Tea\n\nGreen tea.").decode()
    r = _add(client, ds, name="faq", media_type="text/markdown", file=f"data:;name=x;base64,{md}")
    assert r.status_code == 201 and r.json()["name"] == "faq"
    assert r.json()["media_type"] == "text/markdown"
    for bad in ("data:text/plain,plain", "data:text/plain;base64,@@@", "data:;base64,"):
        r = _add(client, ds, name="bad", file=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == "ENTRY_INVALID"
    r = _add(client, ds, file=base64.b64encode(b"no name").decode())
    assert r.status_code == 422 and "name" in r.json()["error"]["message"]
    assert len(client.get(f"/api/datasources/{ds}/entries").json()) == 2


def test_run_body_session_id_continues_the_session(client: TestClient):
    _datasource(client)
    r = client.post("/api/apps", content=LOOKUP_APP, headers={"Content-Type": "application/yaml"})
    app = r.json()["uuid"]
    for _ in range(2):
        r = client.post(f"/api/apps/{app}/run", json={"input": {"q": "x"}, "session_id": "chat-7"})
        assert r.status_code == 200, r.text
        assert r.json()["session"]["id"] == "chat-7"
    assert len(client.get("/api/runs", params={"session_id": "chat-7"}).json()) == 2
    r = client.post(
        f"/api/apps/{app}/run/chat-7", json={"input": {"q": "x"}, "session_id": "chat-8"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = client.post(f"/api/apps/{app}/run", json={"input": {"q": "x"}, "session_id": ""})
    assert r.status_code == 422


def test_expired_sessions_and_runs_are_purged_in_batches(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    settings = make_settings(sessions={"ttl_days": 7}, runs={"retention_days": 30})
    client = make_client(settings)
    _datasource(client)
    r = client.post("/api/apps", content=LOOKUP_APP, headers={"Content-Type": "application/yaml"})
    app = r.json()["uuid"]
    for session in ("old", "new"):
        for _ in range(3):
            r = client.post(f"/api/apps/{app}/run/{session}", json={"input": {"q": "x"}})
            assert r.status_code == 200, r.text
    api: Any = client.app
    db = api.state.api.services.db
    now = utcnow()
    with db() as s, s.begin():
        s.execute(
            update(ChatSession)
            .where(ChatSession.id == "old")
            .values(updated_at=now - timedelta(days=8))
        )
        s.execute(
            update(Run).where(Run.session_id == "old").values(created_at=now - timedelta(days=31))
        )
        s.execute(
            update(Run)
            .where(Run.session_id == "old")
            .where(
                Run.id == select(func.min(Run.id)).where(Run.session_id == "old").scalar_subquery()
            )
            .values(status="running")
        )
    gone = Retention(db, 7, 30, batch=2).purge()
    assert gone == {"sessions": 1, "runs": 2}  # the running one stays
    with db() as s:
        assert s.scalars(select(ChatSession.id)).all() == ["new"]
        assert s.scalar(select(func.count()).select_from(Turn)) == 3
        assert [r.status for r in s.scalars(select(Run).where(Run.session_id == "old"))] == [
            "running"
        ]
        assert s.scalar(select(func.count()).select_from(Run).where(Run.session_id == "new")) == 3
    assert Retention(db, None, None).purge() == {"sessions": 0, "runs": 0}
