"""Secrets at rest through the API: keyed token hashes, encrypted secrets, private files."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from legacy_home import make_legacy_database
from pydantic import SecretStr
from sqlalchemy import text

from appforge.core.keys import ServerKey
from appforge.core.settings import Settings
from tests.datasources.support import wait_for_entry


def _state(client: TestClient) -> Any:
    return client.app.state.api  # type: ignore[attr-defined]


def _scalar(client: TestClient, sql: str, **params: Any) -> Any:
    with _state(client).services.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


def test_admin_token_is_stored_with_a_keyed_hash(client: TestClient, admin_token: str):
    key: ServerKey = _state(client).key
    stored = _scalar(client, "SELECT token_hash FROM tokens WHERE role = 'admin'")
    assert stored == key.hash_token(admin_token)
    assert stored != hashlib.sha256(admin_token.encode()).hexdigest()
    made = client.post("/api/tokens", json={"name": "ci", "require_signature": True}).json()
    row_hash = _scalar(client, "SELECT token_hash FROM tokens WHERE id = :id", id=made["id"])
    secret = _scalar(client, "SELECT signing_secret FROM tokens WHERE id = :id", id=made["id"])
    assert row_hash == key.hash_token(made["token"])
    assert secret.startswith("fernet:") and made["signing_secret"] not in secret
    assert key.decrypt(secret) == made["signing_secret"]


def test_legacy_admin_token_row_is_upgraded_not_duplicated(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
):
    home = tmp_path / "legacy"
    home.mkdir()
    legacy = make_legacy_database(f"sqlite:///{home / 'appforge.db'}", "http://127.0.0.1:9/h")
    settings = make_settings(home=home, admin_token=SecretStr(legacy.admin_token))
    client = make_client(settings)
    client.headers["Authorization"] = f"Token {legacy.admin_token}"
    assert client.get("/api/tokens/me").json()["id"] == "t-admin"
    scheme = _scalar(client, "SELECT hash_scheme FROM tokens WHERE id = 't-admin'")
    admins = _scalar(client, "SELECT COUNT(*) FROM tokens WHERE role = 'admin'")
    assert (scheme, admins) == ("hmac-sha256", 1)
    # The legacy editor token still works, once by its old hash and then by its new one.
    for _ in range(2):
        me = client.get("/api/tokens/me", headers={"Authorization": f"Token {legacy.editor_token}"})
        assert me.status_code == 200 and me.json()["id"] == "t-editor"
        _state(client).tokens.clear()


def test_webhook_secret_is_stored_encrypted_also_after_a_change(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    allow = {"url_allowlist": ["127.0.0.1"], "workers": 0}
    client = make_client(make_settings(datasources=allow, webhooks={"workers": 0}))
    key: ServerKey = _state(client).key
    hook = client.post(
        "/api/webhooks",
        json={"url": "http://127.0.0.1:9/h", "events": ["app.updated"], "secret": "first-secret"},
    )
    assert hook.status_code == 201, hook.text
    hook_id = hook.json()["id"]
    stored = _scalar(client, "SELECT secret FROM webhooks WHERE id = :id", id=hook_id)
    assert "first-secret" not in stored and key.decrypt(stored) == "first-secret"
    changed = client.patch(f"/api/webhooks/{hook_id}", json={"secret": "second-secret"})
    assert changed.status_code == 200, changed.text
    stored = _scalar(client, "SELECT secret FROM webhooks WHERE id = :id", id=hook_id)
    assert "second-secret" not in stored and key.decrypt(stored) == "second-secret"


def test_uploaded_files_and_the_vector_index_are_private(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    open_umask: None,
):
    settings = make_settings(home=tmp_path / "home")
    client = make_client(settings)
    ds = client.post("/api/datasources", json={"name": "docs", "type": "file"}).json()["uuid"]
    r = client.post(
        f"/api/datasources/{ds}/entries/upload",
        files={"file": ("salaries.txt", b"Confidential: the salary table.")},
    )
    assert r.status_code == 201, r.text
    entry = wait_for_entry(client, ds, r.json()["uuid"])
    assert entry["status"] == "ready", entry
    home = settings.home
    stored = home / "files" / ds / entry["uuid"]
    assert stored.read_bytes() == b"Confidential: the salary table."
    assert _mode(stored) == 0o600
    assert [_mode(p) for p in (home, home / "files", stored.parent)] == [0o700] * 3
    assert _mode(home / "chroma") == 0o700
