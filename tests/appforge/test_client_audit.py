"""The client's tokens (roles, scopes, expiry, rate) and audit log, against the real API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from appforge.client import (
    AsyncClient,
    AuditLog,
    Client,
    InvalidRequestError,
    NewToken,
    PermissionDeniedError,
)

APP = """version: 1
name: Audited
type: text
input:
  q: {type: string, required: true}
steps:
  - id: a
    kind: llm
    prompt: {user: "{{ input.q }}"}
output:
  a: "{{ a.text }}"
"""


@pytest.fixture
def af(client: TestClient, admin_token: str) -> Client:
    return Client("http://testserver", admin_token, http=client)


def test_client_create_token_with_role_apps_origins_expiry_and_rate(af: Client):
    app = af.create_app(APP)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    made = af.create_token(
        "widget",
        role="runner",
        apps=["Audited"],  # by name: the server keeps the uuid
        origins=["https://shop.example"],
        expires_at=expires,
        rate_limit="60/minute",
    )
    assert made.token.startswith("af_")
    [listed] = [t for t in af.list_tokens() if t.id == made.id]
    assert (listed.role, listed.apps, listed.origins) == (
        "runner", [app.uuid], ["https://shop.example"],
    )  # fmt: skip
    assert (listed.expires_at, listed.rate_limit, listed.is_admin) == (expires, "60/minute", False)
    # The older flag still works, as a role.
    assert af.create_token("old-admin", is_admin=True).role == "admin"
    assert af.create_token("old-editor", is_admin=False).role == "editor"
    assert af.create_token("default").role == "editor"


def test_client_create_token_refusals_store_nothing(af: Client):
    before = len(af.list_tokens())
    with pytest.raises(ValueError, match="role or is_admin"):
        af.create_token("x", role="viewer", is_admin=True)
    with pytest.raises(InvalidRequestError) as info:
        af.create_token("x", role="editor", origins=["https://a.example"])
    assert info.value.code == "VALIDATION_ERROR"
    assert len(af.list_tokens()) == before


def test_client_audit_filters_and_pages(af: Client, client: TestClient):
    app = af.create_app(APP)
    af.update_app(app.uuid, APP.replace("name: Audited", "name: Audited two"))
    uc = af.create_use_case("support")
    log = af.audit()
    assert isinstance(log, AuditLog) and log.total == 3
    assert [e.action for e in log.events] == ["use_case.created", "app.updated", "app.created"]
    assert log.events[0].actor == "admin" and log.events[0].target_id == uc.id
    apps = af.audit(action="app.", target=app.uuid, limit=1)
    assert (apps.total, [e.action for e in apps.events]) == (2, ["app.updated"])
    assert af.audit(action="app.", offset=1).events[0].action == "app.created"
    assert af.audit(actor="anonymous").total == 0
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert af.audit(start=later).total == 0 and af.audit(end=later).total == 3
    editor = af.create_token("ed", role="editor")
    with pytest.raises(PermissionDeniedError) as info:
        Client("http://testserver", editor.token, http=client).audit()
    assert info.value.code == "FORBIDDEN"


def test_async_client_audit_and_create_token(client: TestClient, admin_token: str):
    async def go() -> tuple[NewToken, AuditLog]:
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncClient(
            "http://testserver", admin_token, http=httpx.AsyncClient(transport=transport)
        ) as af:
            made = await af.create_token("viewer", role="viewer", rate_limit="5/second")
            return made, await af.audit(action="token.created")

    made, log = asyncio.run(go())
    assert (made.role, made.rate_limit) == ("viewer", "5/second")
    [event] = log.events
    assert (event.target_id, event.details["role"]) == (made.id, "viewer")
    assert event.actor_address == "127.0.0.1"  # httpx's ASGI transport's client
