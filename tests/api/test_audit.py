"""The audit log: each change writes exactly one event with its actor, in its transaction.

Run on SQLite and PostgreSQL against the real API: every action is made through
its route, and the log is read back through ``GET /api/audit``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from app_docs import TEXT_APP, YAML
from fastapi.testclient import TestClient
from waiting import poll_until

from api.audit import ACTIONS
from appforge.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
V1 = {"type": "text", "template_text": "Hello {{name}}", "commit_message": "one"}
V2 = {"type": "text", "template_text": "Hi {{name}}, secret plan", "commit_message": "two"}


class Log:
    """The audit log as a test sees it: how many events, and the newest one."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.seen = self.total()

    def total(self) -> int:
        r = self.client.get("/api/audit", params={"limit": 1})
        assert r.status_code == 200, r.text
        return int(r.headers["x-total-count"])

    def one(self, action: str, actor: dict[str, Any], target: str) -> dict[str, Any]:
        """Exactly one event was written since the last look: this one."""
        total = self.total()
        assert total == self.seen + 1, (action, total, self.seen)
        self.seen = total
        [event] = self.client.get("/api/audit", params={"limit": 1}).json()
        assert event["action"] == action
        assert (event["actor_id"], event["actor_name"]) == (actor["id"], actor["name"])
        assert event["actor_address"] == "testclient"
        assert event["target_id"] == target
        return event

    def none(self) -> None:
        assert self.total() == self.seen


@pytest.fixture
def api(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
) -> TestClient:
    settings = make_settings(
        database_url=backend,
        rate_limit={"enabled": False},
        datasources={"url_allowlist": ["127.0.0.1"]},
        webhooks={"workers": 0},
    )
    return make_client(settings)


def _editor(client: TestClient, log: Log) -> tuple[dict[str, str], dict[str, Any]]:
    admin = client.get("/api/tokens/me").json()
    made = client.post("/api/tokens", json={"name": "ed", "role": "editor"}).json()
    event = log.one("token.created", admin, made["id"])
    assert event["target_type"] == "token"
    assert event["details"]["role"] == "editor" and event["details"]["name"] == "ed"
    assert made["token"] not in str(event)
    return {"Authorization": f"Token {made['token']}"}, made


def test_audit_app_actions_each_write_one_event(api: TestClient):
    log = Log(api)
    ed, editor = _editor(api, log)
    app = api.post("/api/apps", content=TEXT_APP, headers={**ed, **YAML}).json()
    created = log.one("app.created", editor, app["uuid"])
    assert created["target_type"] == "app"
    assert created["details"] == {"name": "Echo", "version": 1}
    changed = TEXT_APP.replace("name: Echo", "name: Echo two")
    assert api.patch(f"/api/apps/{app['uuid']}", content=changed, headers={**ed, **YAML}).is_success
    assert log.one("app.updated", editor, app["uuid"])["details"]["version"] == 2
    # The same YAML again changes nothing: no event.
    api.patch(f"/api/apps/{app['uuid']}", content=changed, headers={**ed, **YAML})
    log.none()
    assert api.post(f"/api/apps/{app['uuid']}/versions/1/restore", headers=ed).is_success
    restored = log.one("app.restored", editor, app["uuid"])
    assert restored["details"] == {"name": "Echo", "version": 3, "restored_from": 1}
    assert api.delete(f"/api/apps/{app['uuid']}", headers=ed).status_code == 204
    log.one("app.deleted", editor, app["uuid"])


def test_audit_datasource_and_entry_actions_each_write_one_event(api: TestClient):
    log = Log(api)
    ed, editor = _editor(api, log)
    body = {"name": "docs", "type": "mixed"}
    ds = api.post("/api/datasources", json=body, headers=ed).json()["uuid"]
    log.one("datasource.created", editor, ds)
    text = {"entry_data": {"name": "a.txt", "content": "Refunds take 5 days."}}
    entry = api.post(f"/api/datasources/{ds}/entries", json=text, headers=ed).json()
    event = log.one("entry.created", editor, entry["uuid"])
    assert event["target_type"] == "entry"
    assert event["details"] == {"datasource_uuid": ds, "name": "a.txt", "type": "text"}
    assert "Refunds" not in str(event)
    file = {"entry_data": {"name": "b.txt", "file": base64.b64encode(b"Bees.").decode()}}
    by_json = api.post(f"/api/datasources/{ds}/entries", json=file, headers=ed).json()
    log.one("entry.created", editor, by_json["uuid"])
    files = {"file": ("c.txt", b"Cats sleep a lot.", "text/plain")}
    upload = api.post(f"/api/datasources/{ds}/entries/upload", files=files, headers=ed).json()
    assert log.one("entry.created", editor, upload["uuid"])["details"]["upload"] is True

    def ready() -> bool:
        got = api.get(f"/api/datasources/{ds}/entries/{entry['uuid']}").json()
        return bool(got["status"] == "ready")

    poll_until(ready)
    retry = api.post(f"/api/datasources/{ds}/entries/{entry['uuid']}/retry", headers=ed)
    assert retry.status_code == 200, retry.text
    log.one("entry.retried", editor, entry["uuid"])
    patch = api.patch(f"/api/datasources/{ds}", json={"chunk_size": 300}, headers=ed)
    assert patch.status_code == 200, patch.text
    assert log.one("datasource.updated", editor, ds)["details"]["changed"] == ["chunk_size"]
    refused = api.patch(
        f"/api/datasources/{ds}/entries/{entry['uuid']}", json={"refresh": "daily"}, headers=ed
    )
    assert refused.status_code == 422
    log.none()  # a refused change leaves no event
    gone = api.delete(f"/api/datasources/{ds}/entries/{upload['uuid']}", headers=ed)
    assert gone.status_code == 204
    log.one("entry.deleted", editor, upload["uuid"])
    assert api.delete(f"/api/datasources/{ds}", headers=ed).status_code == 204
    log.one("datasource.deleted", editor, ds)


def test_audit_prompt_actions_each_write_one_event(api: TestClient):
    log = Log(api)
    ed, editor = _editor(api, log)
    uc = api.post("/api/v1/use-cases", json={"name": "support"}, headers=ed).json()["id"]
    log.one("use_case.created", editor, uc)
    api.patch(f"/api/v1/use-cases/{uc}", json={"description": "Help"}, headers=ed)
    assert log.one("use_case.updated", editor, uc)["details"]["changed"] == ["description"]
    url = f"/api/v1/use-cases/{uc}/prompts"
    p = api.post(url, json={"name": "greet"}, headers=ed).json()["id"]
    assert log.one("prompt.created", editor, p)["details"] == {"name": "greet", "use_case_id": uc}
    api.patch(f"/api/v1/prompts/{p}", json={"tags": ["x"]}, headers=ed)
    log.one("prompt.updated", editor, p)
    for body in (V1, V2):
        assert api.post(f"/api/v1/prompts/{p}/versions", json=body, headers=ed).is_success
        event = log.one("prompt_version.created", editor, p)
        assert event["target_type"] == "prompt"
        assert "secret plan" not in str(event) and "Hello" not in str(event)
    assert event["details"] == {"version": 2, "type": "text", "variables": ["name"]}
    base = f"/api/v1/prompts/{p}"
    api.post(f"{base}/versions/1/promote", json={"label": "production"}, headers=ed)
    moved = log.one("label.promoted", editor, p)["details"]
    assert (moved["label"], moved["version"], moved["previous_version"]) == ("production", 1, None)
    api.post(f"{base}/versions/1/demote", json={"label": "production"}, headers=ed)
    log.one("label.demoted", editor, p)
    deploy = {"environment": "beta", "version": 1, "notes": "first"}
    api.post(f"{base}/deploy", json=deploy, headers=ed)
    assert log.one("label.deployed", editor, p)["details"]["notes"] == "first"
    api.post(f"{base}/deploy", json={**deploy, "version": 2}, headers=ed)
    log.one("label.deployed", editor, p)
    api.post(f"{base}/rollback", json={"environment": "beta"}, headers=ed)
    assert log.one("label.rolled_back", editor, p)["details"]["version"] == 1
    bulk = {"operation": "deploy", "environment": "alpha", "prompts": [{"id": p, "version": 2}]}
    assert api.post("/api/v1/prompts/bulk", json=bulk, headers=ed).json()["succeeded"] == 1
    assert log.one("label.deployed", editor, p)["details"]["bulk"] is True
    q = api.post(url, json={"name": "bye"}, headers=ed).json()["id"]
    log.one("prompt.created", editor, q)
    api.delete(f"/api/v1/prompts/{q}", headers=ed)
    log.one("prompt.deleted", editor, q)
    r = api.post(url, json={"name": "ciao"}, headers=ed).json()["id"]
    log.one("prompt.created", editor, r)
    bulk_delete = {"operation": "delete", "prompts": [{"id": r}]}
    api.post("/api/v1/prompts/bulk", json=bulk_delete, headers=ed)
    assert log.one("prompt.deleted", editor, r)["details"]["bulk"] is True
    assert api.delete(f"/api/v1/use-cases/{uc}", headers=ed).status_code == 204
    event = log.one("use_case.deleted", editor, uc)
    assert event["details"] == {"name": "support", "prompt_count": 1, "prompt_ids": [p]}


def test_audit_token_and_webhook_actions_each_write_one_event(api: TestClient):
    log = Log(api)
    admin = api.get("/api/tokens/me").json()
    _, editor = _editor(api, log)
    body = {"url": "http://127.0.0.1:9/hook/T0K3N", "events": ["app.updated"], "secret": "x" * 12}
    hook = api.post("/api/webhooks", json=body).json()
    event = log.one("webhook.created", admin, hook["id"])
    assert event["details"] == {"host": "127.0.0.1", "events": ["app.updated"]}
    assert "T0K3N" not in str(event) and "x" * 12 not in str(event)
    api.patch(f"/api/webhooks/{hook['id']}", json={"active": False, "secret": "y" * 12})
    event = log.one("webhook.updated", admin, hook["id"])
    assert event["details"]["changed"] == ["active", "secret"] and "y" * 12 not in str(event)
    assert api.delete(f"/api/webhooks/{hook['id']}").status_code == 204
    log.one("webhook.deleted", admin, hook["id"])
    assert api.delete(f"/api/tokens/{editor['id']}").status_code == 204
    assert log.one("token.revoked", admin, editor["id"])["details"] == {"name": "ed"}
    # Revoking it again changes nothing: no event.
    assert api.delete(f"/api/tokens/{editor['id']}").status_code == 204
    log.none()


def test_audit_failed_changes_write_no_event(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
):
    # No ingestion worker: an entry stays pending, so its retry is refused (409).
    api = make_client(make_settings(database_url=backend, datasources={"workers": 0}))
    ds = api.post("/api/datasources", json={"name": "docs", "type": "text"}).json()["uuid"]
    text = {"entry_data": {"name": "a", "content": "Some text."}}
    entry = api.post(f"/api/datasources/{ds}/entries", json=text).json()["uuid"]
    uc = api.post("/api/v1/use-cases", json={"name": "support"}).json()["id"]
    p = api.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greet"}).json()["id"]
    api.post(f"/api/v1/prompts/{p}/versions", json=V1)
    log = Log(api)
    failures = [
        (api.post("/api/apps", content="name: [", headers=YAML), 422),
        # The name is free until the INSERT: the store's transaction holds the audit
        # row when the unique index refuses it, and rolls both back.
        (api.post("/api/datasources", json={"name": "docs", "type": "text"}), 409),
        (api.post(f"/api/datasources/{ds}/entries", json=text), 409),
        (api.post(f"/api/datasources/{ds}/entries/{entry}/retry"), 409),
        (api.post(f"/api/datasources/{ds}/entries", json={"entry_data": {"name": "x"}}), 422),
        (api.post("/api/v1/use-cases", json={"name": "support"}), 409),
        (api.post(f"/api/v1/prompts/{p}/versions", json={"type": "text"}), 422),
        (api.post(f"/api/v1/prompts/{p}/versions/1/promote", json={"label": "latest"}), 422),
        (api.post(f"/api/v1/prompts/{p}/rollback", json={"environment": "beta"}), 404),
        (api.post("/api/tokens", json={"name": "t", "role": "runner", "rate_limit": "x"}), 422),
        (
            api.post(
                "/api/webhooks",
                json={"url": "http://10.0.0.1/", "events": ["app.updated"], "secret": "s" * 10},
            ),
            422,
        ),  # fmt: skip
        (api.delete("/api/tokens/no-such-token"), 404),
        (api.delete("/api/apps/no-such-app"), 404),
    ]
    for response, status in failures:
        assert response.status_code == status, response.text
    log.none()


def test_audit_rolled_back_bulk_leaves_no_event(db_client: TestClient):
    uc = db_client.post("/api/v1/use-cases", json={"name": "support"}).json()["id"]
    p = db_client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greet"}).json()["id"]
    db_client.post(f"/api/v1/prompts/{p}/versions", json=V1)
    log = Log(db_client)
    # The first item deploys (and records its event), the second fails: all rolled back.
    items = [{"id": p, "version": 1}, {"id": "no-such-prompt", "version": 1}]
    body = {"operation": "deploy", "environment": "beta", "prompts": items, "atomic": True}
    out = db_client.post("/api/v1/prompts/bulk", json=body).json()
    assert (out["applied"], out["results"][0]["ok"]) == (False, True)
    log.none()
    # Not atomic: the item that worked keeps its event, the other has none.
    out = db_client.post("/api/v1/prompts/bulk", json={**body, "atomic": False}).json()
    assert out["succeeded"] == 1
    admin = db_client.get("/api/tokens/me").json()
    log.one("label.deployed", admin, p)


def test_audit_actions_are_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert len(ACTIONS) == 42
    missing = [a for a in ACTIONS if f"`{a}`" not in readme]
    assert missing == []
