"""Every 4xx/5xx answer has the one error body and an X-Request-ID header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from app_docs import CHAT_APP, TEXT_APP, YAML
from fastapi.testclient import TestClient

from api.app import create_app
from appforge.core.settings import Settings


def _assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def test_error_shape_for_each_status(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    create: Callable[..., Any],
):
    client = make_client(make_settings(limits={"max_body_bytes": 4096}))
    app = create(client, CHAT_APP)
    other = create(client, CHAT_APP)
    client.post(f"/api/apps/{app['uuid']}/run/s", json={"input": {"message": "x"}})
    user = client.post("/api/tokens", json={"name": "user"}).json()["token"]

    _assert_error(client.post("/api/apps", content=b"\xff\xfe", headers=YAML), 400, "BODY_INVALID")
    _assert_error(client.get("/api/apps", headers={"Authorization": ""}), 401, "AUTH_REQUIRED")
    _assert_error(
        client.get("/api/tokens", headers={"Authorization": f"Token {user}"}), 403, "FORBIDDEN"
    )
    _assert_error(client.get("/api/apps/nope"), 404, "APP_NOT_FOUND")
    _assert_error(client.get("/api/no/such/route"), 404, "NOT_FOUND")
    _assert_error(client.put("/api/apps"), 405, "METHOD_NOT_ALLOWED")
    # Another app's session is not revealed to exist.
    _assert_error(
        client.post(f"/api/apps/{other['uuid']}/run/s", json={"input": {"message": "x"}}),
        404,
        "SESSION_NOT_FOUND",
    )
    assert client.post("/api/datasources", json={"name": "dup", "type": "text"}).is_success
    _assert_error(
        client.post("/api/datasources", json={"name": "dup", "type": "text"}),
        409,
        "DATASOURCE_EXISTS",
    )
    _assert_error(
        client.post("/api/apps", content=TEXT_APP + "#" * 5000, headers=YAML),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    _assert_error(
        client.post("/api/apps", content=TEXT_APP, headers={"Content-Type": "text/html"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    body = _assert_error(
        client.post("/api/apps", content="name: [", headers=YAML), 422, "YAML_INVALID"
    )
    assert body["error"]["details"]["errors"][0]["line"] == 1


def test_error_body_limit_applies_to_chunked_bodies(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(limits={"max_body_bytes": 2048}))

    def chunks() -> Any:
        for _ in range(10):
            yield b"#" * 1000

    r = client.post("/api/apps", content=chunks(), headers=YAML)
    _assert_error(r, 413, "PAYLOAD_TOO_LARGE")


def test_error_500_is_the_error_body(settings: Settings, local_provider: Any):
    app = create_app(settings, providers={"local": local_provider})

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/api/boom")
    body = _assert_error(r, 500, "INTERNAL_ERROR")
    assert "secret" not in r.text
    assert body["request_id"]


def test_request_id_is_echoed_or_made(client: TestClient):
    r = client.get("/api/health")
    assert len(r.headers["x-request-id"]) == 32
    r = client.get("/api/health", headers={"X-Request-ID": "trace-abc-123456"})
    assert r.headers["x-request-id"] == "trace-abc-123456"
    r = client.get("/api/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"


def test_error_codes_are_documented_in_readme():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(
        r"""(?:code\s*[=:]\s*|Failed\(\s*|_CODES\[\d+\]\s*=\s*|: )"([A-Z][A-Z_]{3,})\""""
    )
    codes: set[str] = set()
    for package in ("api", "apps_yaml", "providers", "appforge"):
        for path in (root / package).rglob("*.py"):
            codes |= set(pattern.findall(path.read_text()))
    assert {"APP_NOT_FOUND", "YAML_TOO_COMPLEX", "MODEL_NOT_FOUND", "CANCELLED"} <= codes
    readme = (root / "README.md").read_text()
    missing = sorted(c for c in codes if f"`{c}`" not in readme)
    assert missing == []


def test_error_shape_for_429(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(
        make_settings(rate_limit={"requests": 1, "window_seconds": 3600, "burst": 1})
    )
    assert client.get("/api/apps").status_code == 200
    body = _assert_error(client.get("/api/apps"), 429, "RATE_LIMITED")
    assert body["error"]["details"]["retry_after"] > 0
