"""Values no store can keep are 422 naming the field, with nothing stored (SQLite, PostgreSQL).

NUL characters and lone surrogates in JSON strings, query values, path segments
and YAML; integers past 64 bits in query, path and body; another app's session.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from app_docs import CHAT_APP, TEXT_APP, YAML
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import insert

from appforge.cli.root import main
from appforge.core.db import make_engine, utcnow
from appforge.core.settings import Settings
from runs.tables import ChatSession, Run

HUGE = str(2**70)
JSON = {"Content-Type": "application/json"}


def _refused(r: Any, field: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in error["message"], error["message"]


@pytest.mark.parametrize(
    "raw, field",
    [
        ('{"input": {"question": "a\\ud800b"}}', "body.input.question"),
        ('{"input": {"question": "a\\u0000b"}}', "body.input.question"),
        ('{"input": {"question": "ok", "tone\\u0000": "plain"}}', "body.input.tone"),
        ('{"input": {"question": "ok", "n": 1e400}}', "body.input.n"),
        ('{"input": {"question": "ok", "n": ' + HUGE + "}}", "body.input.n"),
    ],
)
def test_input_values_run_unstorable_input_is_422_and_stores_nothing(
    db_client: TestClient, create: Callable[..., Any], raw: str, field: str
):
    app = create(db_client)
    r = db_client.post(f"/api/apps/{app['uuid']}/run", content=raw, headers=JSON)
    _refused(r, field)
    listed = db_client.get(f"/api/apps/{app['uuid']}/runs")
    assert listed.headers["x-total-count"] == "0"


def test_input_values_huge_integers_in_query_and_path_are_422(
    db_client: TestClient, create: Callable[..., Any]
):
    app = create(db_client)
    _refused(db_client.get("/api/apps", params={"offset": HUGE}), "query.offset")
    _refused(db_client.get(f"/api/apps/{app['uuid']}/runs?offset={HUGE}"), "query.offset")
    _refused(db_client.get(f"/api/v1/use-cases?skip={HUGE}"), "query.skip")
    _refused(db_client.get(f"/api/apps/{app['uuid']}/versions/{HUGE}"), "path.version")
    restore = db_client.post(f"/api/apps/{app['uuid']}/versions/-{HUGE}/restore")
    _refused(restore, "path.version")
    assert db_client.get(f"/api/apps?offset={2**63 - 1}").status_code == 200


def test_input_values_nul_in_path_and_query_is_422(db_client: TestClient):
    _refused(db_client.get("/api/apps/a%00b"), "path.app_uuid")
    _refused(db_client.get("/api/apps", params={"q": "a\x00b"}), "query.q")
    _refused(db_client.get("/api/sessions/s%00"), "path.session_id")


@pytest.mark.parametrize(
    "text",
    [
        TEXT_APP.replace("name: Echo", "name: Ec\x00ho"),
        TEXT_APP.replace("name: Echo", 'name: "Ec\\0ho"'),
        TEXT_APP.replace("name: Echo", 'name: "Ec\\ud800ho"'),
    ],
)
def test_input_values_yaml_with_nul_or_surrogate_is_422(db_client: TestClient, text: str):
    r = db_client.post("/api/apps", content=text.encode("utf-8", "surrogatepass"), headers=YAML)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "YAML_INVALID"
    assert error["details"]["errors"][0]["line"] == 2
    assert db_client.get("/api/apps").headers["x-total-count"] == "0"


def test_input_values_json_app_with_nul_is_422(db_client: TestClient):
    body = json.dumps({"version": 1, "name": "a\x00b", "steps": [], "output": {}})
    _refused(db_client.post("/api/apps", content=body, headers=JSON), "body.name")
    assert db_client.get("/api/apps").headers["x-total-count"] == "0"


def test_input_values_other_apps_session_is_404(db_client: TestClient, create: Callable[..., Any]):
    first, second = create(db_client, CHAT_APP), create(db_client, CHAT_APP)
    made = db_client.post(f"/api/apps/{first['uuid']}/run", json={"input": {"message": "Hi"}})
    session = made.json()["session"]["id"]
    r = db_client.post(
        f"/api/apps/{second['uuid']}/run/{session}", json={"input": {"message": "Hi"}}
    )
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "SESSION_NOT_FOUND"


def test_backup_survives_a_stored_lone_surrogate(
    client: TestClient,
    create: Callable[..., Any],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """A run stored with a lone surrogate before such input was refused: the backup
    still writes, and restores it exactly."""
    app = create(client)
    engine = make_engine(settings.resolved_database_url())
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(ChatSession).values(id="s1", app_uuid=app["uuid"], owner="x"))
        conn.execute(
            insert(Run).values(
                id="r1", app_uuid=app["uuid"], app_version=1, session_id="s1",
                status="failed", input={"question": "a\ud800b"}, output={}, steps=[],
                usage={}, created_at=now,
            )
        )  # fmt: skip
    engine.dispose()
    monkeypatch.setenv("APPFORGE_HOME", str(settings.home))
    target = tmp_path / "backup.json"
    result = CliRunner().invoke(main, ["backup", "--json_path", str(target)])
    assert result.exit_code == 0, result.output
    doc = json.loads(target.read_bytes())
    runs = {r["id"]: r for r in doc["tables"]["runs"]}
    assert runs["r1"]["input"] == {"question": "a\ud800b"}


def _multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body written by hand: HTTP clients escape a NUL in a file
    name (httpx sends ``%00``), a hostile client does not."""
    boundary = "appforge-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value.encode("utf-8", "surrogatepass")
        + b"\r\n"
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: text/plain\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    "data, filename, field",
    [
        ({"name": "a\x00b"}, "ok.txt", "body.name"),
        ({"entry_metadata": '{"k": "a\x00b"}'}, "ok.txt", "body.entry_metadata"),
        ({"entry_metadata": '{"k": "a\\u0000b"}'}, "ok.txt", "body.entry_metadata.k"),
        ({"entry_metadata": '{"k": "a\\ud800b"}'}, "ok.txt", "body.entry_metadata.k"),
        ({"entry_metadata": '{"k": 1e400}'}, "ok.txt", "body.entry_metadata.k"),
        ({"entry_metadata": '{"k": ' + HUGE + "}"}, "ok.txt", "body.entry_metadata.k"),
        ({}, "a\x00b.txt", "body.file.filename"),
    ],
)
def test_input_values_upload_fields_with_unstorable_values_are_422_and_store_nothing(
    db_client: TestClient, data: dict[str, str], filename: str, field: str
):
    ds = db_client.post("/api/datasources", json={"name": "up", "type": "file"}).json()["uuid"]
    body, media = _multipart(data, filename, b"An uploaded page of text.")
    r = db_client.post(
        f"/api/datasources/{ds}/entries/upload", content=body, headers={"Content-Type": media}
    )
    _refused(r, field)
    assert db_client.get(f"/api/datasources/{ds}/entries").json() == []
    home = db_client.app.state.api.settings.home  # type: ignore[attr-defined]
    assert [p for p in (home / "files").rglob("*") if p.is_file()] == []
    # The same upload with storable values is taken.
    ok = db_client.post(
        f"/api/datasources/{ds}/entries/upload",
        data={"name": "fine", "entry_metadata": '{"k": "v"}'},
        files={"file": ("ok.txt", b"An uploaded page of text.", "text/plain")},
    )
    assert ok.status_code == 201, ok.text


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [65, 900, 100_000])
@pytest.mark.parametrize("token", [True, False])
def test_input_values_json_nested_too_deep_is_4xx_never_500(
    client: TestClient, create: Callable[..., Any], depth: int, token: bool
):
    """A JSON body nested a few hundred levels deep (a few kilobytes) was a 500 with a
    traceback, for anyone: the parser's recursion, or that of what read it later. Lists
    and objects nest at most 64 levels."""
    app = create(client)
    admin = client.headers["Authorization"]
    if not token:
        del client.headers["Authorization"]
    bodies = {
        "/api/apps": _nested(depth),
        f"/api/apps/{app['uuid']}/run": '{"input": {"question": ' + _nested(depth) + "}}",
        "/v1/chat/completions": '{"model": "Echo", "messages": [{"role": "user", "content": '
        + _nested(depth)
        + "}]}",
        "/api/prompts": '{"name": "p", "prompt": ' + _nested(depth) + "}",
    }
    answers = {path: client.post(path, content=body, headers=JSON) for path, body in bodies.items()}
    statuses = {path: r.status_code for path, r in answers.items()}
    assert all(400 <= status < 500 for status in statuses.values()), statuses
    assert all("error" in r.json() for r in answers.values())
    assert "nested deeper than 64 levels" in answers["/api/apps"].text
    listed = client.get("/api/apps", headers={"Authorization": admin})
    assert listed.headers["x-total-count"] == "1"  # nothing stored


def test_input_values_json_nested_64_deep_is_taken(client: TestClient, create: Callable[..., Any]):
    app = create(client)
    # The body, its input, and 62 more: 64 levels.
    deep = '{"input": {"question": "q", "extra": ' + _nested(62) + "}}"
    r = client.post(f"/api/apps/{app['uuid']}/run", content=deep, headers=JSON)
    assert "nested deeper" not in r.text, r.text
    deeper = '{"input": {"question": "q", "extra": ' + _nested(63) + "}}"
    _refused(client.post(f"/api/apps/{app['uuid']}/run", content=deeper, headers=JSON), "body")
