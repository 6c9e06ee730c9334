"""Evaluation policies go with their prompt or app: deleting it (one delete, a bulk
delete, its use case deleted) deletes the stored policy in the same transaction, so a
new prompt or app of the same name starts without one. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app_docs import TEXT_APP
from fastapi.testclient import TestClient
from sqlalchemy import text

from appforge.core.db import make_engine
from appforge.core.settings import Settings

PROMPT_NEED = {"dataset": "cases", "scorers": [{"type": "equals"}], "app": "Echo"}
APP_NEED = {"dataset": "cases", "scorers": [{"type": "equals"}]}


def _stored(url: str) -> list[tuple[str, str]]:
    """Every policy row in the database, read past the API."""
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT subject, subject_id FROM evaluation_policies"))
        found = sorted((r[0], r[1]) for r in rows)
    engine.dispose()
    return found


def _prompt(api: TestClient, uc: str, name: str) -> str:
    made = api.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": name})
    assert made.status_code == 201, made.text
    pid: str = made.json()["id"]
    put = api.put(f"/api/v1/prompts/{pid}/policy", json=PROMPT_NEED)
    assert put.status_code == 200, put.text
    return pid


def test_policy_deleted_with_its_prompt_and_not_inherited_by_a_new_one(
    db_client: TestClient,
    create: Callable[..., Any],
    backend: str | None,
    settings: Settings,
):
    url = backend or settings.resolved_database_url()
    create(db_client)
    assert db_client.post("/api/datasets", json={"name": "cases"}).status_code == 201
    uc = db_client.post("/api/v1/use-cases", json={"name": "Policies"}).json()["id"]
    one = _prompt(db_client, uc, "one")
    two = _prompt(db_client, uc, "two")
    assert _stored(url) == sorted([("prompt", one), ("prompt", two)])

    assert db_client.delete(f"/api/v1/prompts/{one}").status_code == 204
    assert _stored(url) == [("prompt", two)]
    again = db_client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "one"}).json()["id"]
    missing = db_client.get(f"/api/v1/prompts/{again}/policy")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "POLICY_NOT_FOUND"
    assert _stored(url) == [("prompt", two)]

    bulk = db_client.post(
        "/api/v1/prompts/bulk", json={"operation": "delete", "prompts": [{"id": two}]}
    )
    assert bulk.status_code == 200 and bulk.json()["applied"], bulk.text
    assert _stored(url) == []

    # Deleting the use case deletes its prompts, and their policies with them.
    three = _prompt(db_client, uc, "three")
    assert _stored(url) == [("prompt", three)]
    assert db_client.delete(f"/api/v1/use-cases/{uc}").status_code == 204
    assert _stored(url) == []


def test_policy_deleted_with_its_app_and_not_inherited_by_a_new_one(
    db_client: TestClient,
    create: Callable[..., Any],
    backend: str | None,
    settings: Settings,
):
    url = backend or settings.resolved_database_url()
    assert db_client.post("/api/datasets", json={"name": "cases"}).status_code == 201
    first = create(db_client)["uuid"]
    other = create(db_client, TEXT_APP.replace("name: Echo", "name: Other"))["uuid"]
    for uuid in (first, other):
        put = db_client.put(f"/api/apps/{uuid}/policy", json=APP_NEED)
        assert put.status_code == 200, put.text
    assert _stored(url) == sorted([("app", first), ("app", other)])

    assert db_client.delete(f"/api/apps/{first}").status_code == 204
    assert _stored(url) == [("app", other)]
    again = create(db_client)["uuid"]
    missing = db_client.get(f"/api/apps/{again}/policy")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "POLICY_NOT_FOUND"
    assert db_client.get(f"/api/apps/{other}/policy").status_code == 200
