"""Signed requests: good, stale, replayed, tampered and unsigned ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from appforge.core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, timestamp_now


def _signed_token(client: TestClient) -> tuple[str, str]:
    r = client.post("/api/tokens", json={"name": "signer", "require_signature": True})
    assert r.status_code == 201
    body = r.json()
    assert body["require_signature"] is True
    assert body["signing_secret"].startswith("afs_")
    return body["token"], body["signing_secret"]


def _headers(
    token: str, secret: str, method: str, path: str, body: bytes = b"", timestamp: str | None = None
) -> dict[str, str]:
    ts = timestamp or timestamp_now()
    return {
        "Authorization": f"Token {token}",
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: sign(secret, token, ts, method, path, body),
    }


def _code(r: Any) -> str:
    assert r.status_code == 401, r.text
    return str(r.json()["error"]["code"])


def test_signed_request_good_and_replayed(client: TestClient):
    token, secret = _signed_token(client)
    headers = _headers(token, secret, "GET", "/api/apps?limit=5")
    assert client.get("/api/apps?limit=5", headers=headers).status_code == 200
    assert _code(client.get("/api/apps?limit=5", headers=headers)) == "SIGNATURE_REPLAYED"


def test_signed_request_with_body(client: TestClient):
    token, secret = _signed_token(client)
    doc = {
        "name": "S",
        "steps": [{"id": "a", "kind": "llm", "prompt": {"user": "hi"}}],
        "output": {"a": "{{ a.text }}"},
    }
    body = json.dumps(doc).encode()
    headers = {
        **_headers(token, secret, "POST", "/api/apps", body),
        "Content-Type": "application/json",
    }
    assert client.post("/api/apps", content=body, headers=headers).status_code == 201
    # the same signature on a different body is refused
    other = json.dumps({**doc, "name": "Evil"}).encode()
    headers = {
        **_headers(token, secret, "POST", "/api/apps", body),
        "Content-Type": "application/json",
    }
    assert _code(client.post("/api/apps", content=other, headers=headers)) == "SIGNATURE_INVALID"


def test_signed_request_failures_have_distinct_codes(client: TestClient):
    token, secret = _signed_token(client)
    auth = {"Authorization": f"Token {token}"}
    assert _code(client.get("/api/apps", headers=auth)) == "SIGNATURE_REQUIRED"
    stale = (datetime.now(UTC) - timedelta(minutes=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = _headers(token, secret, "GET", "/api/apps", timestamp=stale)
    assert _code(client.get("/api/apps", headers=headers)) == "SIGNATURE_EXPIRED"
    future = (datetime.now(UTC) + timedelta(minutes=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = _headers(token, secret, "GET", "/api/apps", timestamp=future)
    assert _code(client.get("/api/apps", headers=headers)) == "SIGNATURE_EXPIRED"
    tampered = _headers(token, secret, "GET", "/api/apps")
    tampered[SIGNATURE_HEADER] = tampered[SIGNATURE_HEADER][:-1] + (
        "0" if tampered[SIGNATURE_HEADER][-1] != "0" else "1"
    )
    assert _code(client.get("/api/apps", headers=tampered)) == "SIGNATURE_INVALID"
    wrong_path = _headers(token, secret, "GET", "/api/runs/x")
    assert _code(client.get("/api/apps", headers=wrong_path)) == "SIGNATURE_INVALID"
    wrong_key = _headers(token, "afs_not_the_secret", "GET", "/api/apps")
    assert _code(client.get("/api/apps", headers=wrong_key)) == "SIGNATURE_INVALID"
    bad_ts = {**_headers(token, secret, "GET", "/api/apps"), TIMESTAMP_HEADER: "yesterday"}
    assert _code(client.get("/api/apps", headers=bad_ts)) == "SIGNATURE_INVALID"


def test_unsigned_tokens_need_no_signature(client: TestClient):
    r = client.post("/api/tokens", json={"name": "plain"}).json()
    assert r["signing_secret"] is None and r["require_signature"] is False
    assert (
        client.get("/api/apps", headers={"Authorization": f"Token {r['token']}"}).status_code == 200
    )
