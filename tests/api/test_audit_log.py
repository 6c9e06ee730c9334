"""Reading the audit log (filters, paging, admins only), anonymous actors, retention."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from waiting import poll_until

from api.access import Anyone
from api.audit import Actor, AuditRetention, record
from api.deps import DbSession, Who
from api.tables import AuditEvent
from appforge.core.db import make_engine, migrate, session_factory, transaction, utcnow
from appforge.core.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _factory(client: TestClient) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = client.app.state.api.db  # type: ignore[attr-defined]
    return factory


def _add(client: TestClient, *events: dict[str, Any]) -> None:
    """Events written straight to the table, at chosen times."""
    with transaction(_factory(client)) as db:
        for e in events:
            values = {"target_type": "app", "target_id": "t", "details": {}, **e}
            db.add(AuditEvent(**values))


def _read(client: TestClient, **params: Any) -> tuple[list[dict[str, Any]], int]:
    r = client.get("/api/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json(), int(r.headers["x-total-count"])


@pytest.fixture
def seeded(db_client: TestClient) -> TestClient:
    _add(
        db_client,
        {"at": T0, "actor_id": "id-1", "actor_name": "ci", "action": "app.created",
         "target_id": "a1"},
        {"at": T0 + timedelta(hours=1), "actor_id": "id-2", "actor_name": "ops",
         "action": "use_case.created", "target_type": "use_case", "target_id": "u1"},
        {"at": T0 + timedelta(hours=2), "actor_name": None, "actor_address": "10.1.2.3",
         "action": "app.updated", "target_id": "a1"},
        {"at": T0 + timedelta(hours=3), "actor_id": "id-1", "actor_name": "ci",
         "action": "usexcase.created", "target_id": "x1"},
        {"at": T0 + timedelta(hours=4), "actor_id": "id-1", "actor_name": "ci",
         "action": "app.deleted", "target_id": "a1"},
    )  # fmt: skip
    return db_client


def test_audit_filters_newest_first(seeded: TestClient):
    def actions(**params: Any) -> list[str]:
        return [e["action"] for e in _read(seeded, **params)[0]]

    assert actions() == [
        "app.deleted", "usexcase.created", "app.updated", "use_case.created", "app.created",
    ]  # fmt: skip
    assert actions(actor="ci") == ["app.deleted", "usexcase.created", "app.created"]
    assert actions(actor="id-2") == ["use_case.created"]
    assert actions(actor="anonymous") == ["app.updated"]
    assert actions(actor="nobody") == []
    assert actions(action="app.updated") == ["app.updated"]
    assert actions(action="app.") == ["app.deleted", "app.updated", "app.created"]
    # '_' in a prefix is a character, not a LIKE wildcard.
    assert actions(action="use_case.") == ["use_case.created"]
    assert actions(action="app") == []
    assert actions(target="a1", actor="ci") == ["app.deleted", "app.created"]
    window = {"from": (T0 + timedelta(hours=1)).isoformat(), "to": "2026-03-01T15:00:00"}
    assert actions(**window) == ["app.updated", "use_case.created"]  # `to` is excluded
    anonymous = _read(seeded, actor="anonymous")[0][0]
    assert (anonymous["actor_id"], anonymous["actor_address"]) == (None, "10.1.2.3")


def test_audit_paging_and_total(seeded: TestClient):
    page, total = _read(seeded, limit=2, offset=1)
    assert total == 5
    assert [e["action"] for e in page] == ["usexcase.created", "app.updated"]
    assert _read(seeded, action="app.", limit=1) == (_read(seeded, action="app.")[0][:1], 3)


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"action": ""},
    ],
)
def test_audit_bad_filters_are_422(client: TestClient, params: dict[str, Any]):
    r = client.get("/api/audit", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"


def test_audit_is_for_admins_only(client: TestClient):
    for role in ("editor", "viewer", "runner"):
        made = client.post("/api/tokens", json={"name": role, "role": role}).json()
        r = client.get("/api/audit", headers={"Authorization": f"Token {made['token']}"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN"), role
    r = client.get("/api/audit", headers={"Authorization": ""})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "AUTH_REQUIRED")


def test_audit_anonymous_actor_has_its_address(db_client: TestClient):
    """No change route admits callers without a token yet; one that did would record this."""
    app: Any = db_client.app

    @app.post("/api/test-anonymous-change")
    def change(db: DbSession, _: Anyone, who: Who) -> dict[str, str]:
        record(db, who, "app.updated", "some-app", {"name": "x"})
        db.commit()
        return {}

    assert db_client.post("/api/test-anonymous-change", headers={"Authorization": ""}).is_success
    assert db_client.post("/api/test-anonymous-change").is_success  # the admin token
    events, total = _read(db_client, actor="anonymous")
    assert total == 1
    assert (events[0]["actor_id"], events[0]["actor_name"]) == (None, None)
    assert events[0]["actor_address"] == "testclient"  # TestClient's peer address
    assert _read(db_client, actor="admin")[1] == 1


def test_audit_event_rolls_back_with_its_transaction(db_client: TestClient):
    factory = _factory(db_client)
    with pytest.raises(RuntimeError), transaction(factory) as db:
        record(db, Actor("id", "ci", None), "app.created", "a1")
        db.flush()  # written, but not committed
        raise RuntimeError("the change failed")
    assert _read(db_client)[1] == 0


def _count(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return db.scalar(select(func.count()).select_from(AuditEvent)) or 0


def _aged(client: TestClient, now: datetime, *days: float) -> None:
    _add(client, *({"at": now - timedelta(days=d), "action": "app.created"} for d in days))


def test_audit_retention_purges_only_old_events(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
):
    # Kept forever: the API starts no purge thread, so only this test purges.
    api = make_client(make_settings(database_url=backend, audit={"retention_days": 0}))
    factory = _factory(api)
    now = utcnow()
    _aged(api, now, 400, 366, 365.01, 364.99, 10, 0)
    assert AuditRetention(factory, 0).purge(now) == 0
    assert AuditRetention(factory, 365, batch=2).purge(now) == 3  # two batches and one
    ages = sorted((now - e["at"]).days for e in _read_all(api))
    assert ages == [0, 10, 364]


def _read_all(client: TestClient) -> list[dict[str, Any]]:
    events = _read(client, limit=500)[0]
    for e in events:
        e["at"] = datetime.fromisoformat(e["at"])
    return events


def test_audit_retention_runs_in_the_background(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    settings = make_settings(audit={"retention_days": 30})
    settings.home.mkdir(parents=True)
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    factory = session_factory(engine)
    now = utcnow()
    with transaction(factory) as db:
        for days in (40, 31, 29, 1):
            db.add(AuditEvent(at=now - timedelta(days=days), action="app.created",
                              target_type="app", target_id="t", details={}))  # fmt: skip
    engine.dispose()
    # A server keeping 30 days purges at start-up, from its own thread.
    api = make_client(settings)
    poll_until(lambda: _count(_factory(api)) == 2)
    assert _read(api)[1] == 2
