"""Backup and restore through the CLI: a round trip gives the same API answers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import event

from appforge import backup as backups
from appforge.cli import main
from appforge.core.db import make_engine
from appforge.core.modes import write_private
from appforge.core.settings import Settings

APP = """\
name: Backed up
type: chat
input:
  q: {type: string, required: true}
steps:
  - id: a
    kind: llm
    prompt: {user: "{{ input.q }}"}
    history: 2
    params: {temperature: 0, seed: 1, max_tokens: 8}
output:
  a: "{{ a.text }}"
"""


def _answers(client: TestClient, app_uuid: str, session_id: str) -> dict[str, Any]:
    def strip(value: Any) -> Any:
        return json.loads(json.dumps(value))

    return {
        "apps": strip(client.get("/api/apps").json()),
        "yaml": client.get(f"/api/apps/{app_uuid}", headers={"Accept": "application/yaml"}).text,
        "versions": strip(client.get(f"/api/apps/{app_uuid}/versions").json()),
        "session": strip(client.get(f"/api/sessions/{session_id}").json()),
        "runs": strip(client.get(f"/api/apps/{app_uuid}/runs").json()),
        "tokens": [
            {k: t[k] for k in ("id", "name", "is_admin", "prefix")}
            for t in client.get("/api/tokens").json()
        ],
    }


def _env(settings: Settings) -> dict[str, str]:
    env = {"APPFORGE_HOME": str(settings.home)}
    if settings.database_url:
        env["APPFORGE_DATABASE_URL"] = settings.database_url
    if settings.secret_key is not None:
        env["APPFORGE_SECRET_KEY"] = settings.secret_key.get_secret_value()
    return env


# Restoring on another home needs the server key of the home the backup came from.
SHARED_KEY = "backup-test-server-key-0123456789abcdef"


def test_backup_restore_round_trip(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    tmp_path: Path,
):
    source = make_settings(home=tmp_path / "a", secret_key=SHARED_KEY)
    client = make_client(source)
    app = client.post("/api/apps", content=APP, headers={"Content-Type": "application/yaml"})
    uuid = app.json()["uuid"]
    client.patch(
        f"/api/apps/{uuid}",
        content=APP.replace("Backed up", "Backed up v2"),
        headers={"Content-Type": "application/yaml"},
    )
    first = client.post(f"/api/apps/{uuid}/run/s1", json={"input": {"q": "hi"}})
    client.post(f"/api/apps/{uuid}/run/s1", json={"input": {"q": "again"}})
    client.post("/api/tokens", json={"name": "ci"})
    assert first.status_code == 200
    before = _answers(client, uuid, "s1")

    runner = CliRunner()
    path = tmp_path / "backup.json"
    out = runner.invoke(
        main, ["backup", "--json_path", str(path)], env=_env(source), catch_exceptions=False
    )
    assert out.exit_code == 0, out.stderr
    assert "backed up" in out.stdout

    target = make_settings(home=tmp_path / "b", database_url=backend, secret_key=SHARED_KEY)
    restored = runner.invoke(
        main, ["restore", "--json_path", str(path)], env=_env(target), catch_exceptions=False
    )
    assert restored.exit_code == 0, restored.stderr
    assert "restored" in restored.stdout
    after_client = make_client(target)
    assert _answers(after_client, uuid, "s1") == before
    # the restored database keeps working: a new turn and a new version
    more = after_client.post(f"/api/apps/{uuid}/run/s1", json={"input": {"q": "third"}})
    assert more.status_code == 200
    assert len(after_client.get("/api/sessions/s1").json()["turns"]) == 3
    assert (
        after_client.patch(
            f"/api/apps/{uuid}", content=APP, headers={"Content-Type": "application/yaml"}
        ).json()["version"]
        == 3
    )


def test_a_backup_is_one_snapshot_whatever_is_written_meanwhile(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    tmp_path: Path,
):
    """An app and its run made while the backup reads (just after it read the apps):
    each table was read at its own moment, so the backup held the run without its app
    and could not be restored. Now neither is in it, and it restores."""
    source = make_settings(home=tmp_path / "a", database_url=backend, secret_key=SHARED_KEY)
    client = make_client(source)
    uuid = client.post("/api/apps", content=APP, headers={"Content-Type": "application/yaml"})
    kept = uuid.json()["uuid"]
    assert client.post(f"/api/apps/{kept}/run/s1", json={"input": {"q": "hi"}}).status_code == 200
    made: list[str] = []

    def meanwhile(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if made or not re.search(r"FROM apps ORDER BY", statement):
            return
        other = client.post(
            "/api/apps",
            content=APP.replace("Backed up", "Meanwhile"),
            headers={"Content-Type": "application/yaml"},
        ).json()["uuid"]
        ran = client.post(f"/api/apps/{other}/run", json={"input": {"q": "hi"}})
        assert ran.status_code == 200, ran.text
        made.append(other)

    engine = make_engine(source.resolved_database_url())
    event.listen(engine, "after_cursor_execute", meanwhile)
    path = tmp_path / "backup.json"
    try:
        write_private(path, backups.document(engine, source.home))
    finally:
        event.remove(engine, "after_cursor_execute", meanwhile)
        engine.dispose()
    assert made, "nothing was written meanwhile"
    doc = json.loads(path.read_text())
    apps = {a["uuid"] for a in doc["tables"]["apps"]}
    assert apps == {kept}
    assert {r["app_uuid"] for r in doc["tables"]["runs"]} == {kept}
    target = make_settings(home=tmp_path / "b", secret_key=SHARED_KEY)
    restored = CliRunner().invoke(
        main, ["restore", "--json_path", str(path)], env=_env(target), catch_exceptions=False
    )
    assert restored.exit_code == 0, restored.stderr


def test_restore_refuses_bad_files_and_writes_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
):
    runner = CliRunner()
    env = _env(make_settings(home=tmp_path / "c"))
    cases: list[tuple[Any, str]] = [
        ({"format": "something-else"}, "not an appforge backup"),
        ({"format": "appforge-backup", "format_version": 99, "tables": {}}, "format version"),
        (
            {"format": "appforge-backup", "format_version": 1, "tables": {"nope": []}},
            "unknown table",
        ),
        ({"format": "appforge-backup", "tables": {"apps": 5}}, "must be a list of objects"),
        ({"format": "appforge-backup", "tables": {"apps": [[1]]}}, "must be a list of objects"),
        ({"format": "appforge-backup", "tables": [], "files": {}}, '"tables" must be an object'),
        ({"format": "appforge-backup", "files": {"files/x": 5}}, "must be base64 text"),
        ({"format": "appforge-backup", "files": {"../x": "eA=="}}, "outside the files folder"),
        ({"format": "appforge-backup", "files": {"files/x": "not base64!"}}, "is not base64"),
        ([1, 2], "not an appforge backup"),
    ]
    for doc, words in cases:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(doc))
        result = runner.invoke(main, ["restore", "--json_path", str(path), "--yes"], env=env)
        assert result.exit_code == 2
        assert "BACKUP_INVALID" in result.stderr and words in result.stderr
        assert result.stdout == ""
    for broken in ("{not json", '{"format": "appforge-backup", "tables": {"apps": [{'):
        path.write_text(broken)  # the second ends before its document does
        result = runner.invoke(main, ["restore", "--json_path", str(path)], env=env)
        assert result.exit_code == 2 and "not JSON" in result.stderr, result.stderr
    assert not (tmp_path / "c" / "files").exists()


def test_a_backup_whose_tables_come_in_another_order_restores(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
):
    """Restored as it is parsed: rows of a table that come before the rows they refer
    to (a document edited or written by another tool) wait for them."""
    source = make_settings(home=tmp_path / "a", secret_key=SHARED_KEY)
    client = make_client(source)
    uuid = client.post(
        "/api/apps", content=APP, headers={"Content-Type": "application/yaml"}
    ).json()["uuid"]
    assert client.post(f"/api/apps/{uuid}/run/s1", json={"input": {"q": "hi"}}).status_code == 200
    before = _answers(client, uuid, "s1")
    runner = CliRunner()
    path = tmp_path / "backup.json"
    made = runner.invoke(main, ["backup", "--json_path", str(path)], env=_env(source))
    assert made.exit_code == 0, made.stderr
    doc = json.loads(path.read_text())
    doc["tables"] = dict(reversed(doc["tables"].items()))  # children first
    assert list(doc["tables"])[-1] == "apps"
    path.write_text(json.dumps(doc))
    target = make_settings(home=tmp_path / "b", secret_key=SHARED_KEY)
    restored = runner.invoke(main, ["restore", "--json_path", str(path)], env=_env(target))
    assert restored.exit_code == 0, restored.stderr
    assert _answers(make_client(target), uuid, "s1") == before


def test_restore_asks_before_replacing(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
):
    settings = make_settings(home=tmp_path / "d")
    client = make_client(settings)
    client.post("/api/apps", content=APP, headers={"Content-Type": "application/yaml"})
    runner = CliRunner()
    path = tmp_path / "b.json"
    runner.invoke(main, ["backup", "--json_path", str(path)], env=_env(settings))
    refused = runner.invoke(
        main, ["restore", "--json_path", str(path)], env=_env(settings), input="n\n"
    )
    assert refused.exit_code == 1
    assert "Continue?" in refused.stderr
    accepted = runner.invoke(
        main, ["restore", "--json_path", str(path)], env=_env(settings), input="y\n"
    )
    assert accepted.exit_code == 0, accepted.stderr


@pytest.fixture(autouse=True)
def _no_env_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPFORGE_DATABASE_URL", raising=False)


def test_export_apps_prompts_and_runs(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
):
    settings = make_settings(home=tmp_path / "e")
    client = make_client(settings)
    uuid = client.post(
        "/api/apps", content=APP, headers={"Content-Type": "application/yaml"}
    ).json()["uuid"]
    client.patch(
        f"/api/apps/{uuid}",
        content=APP.replace("Backed up", "Two"),
        headers={"Content-Type": "application/yaml"},
    )
    client.post(f"/api/apps/{uuid}/run", json={"input": {"q": "hi"}})
    uc = client.post("/api/v1/use-cases", json={"name": "UC"}).json()["id"]
    pid = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "p"}).json()["id"]
    client.post(f"/api/v1/prompts/{pid}/versions", json={"type": "text", "template_text": "Hi"})
    client.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
    runner = CliRunner()
    plain = tmp_path / "plain.json"
    result = runner.invoke(
        main, ["export", "--filename", str(plain)], env=_env(settings), catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("exported 1 apps, 0 datasources")
    doc = json.loads(plain.read_text())
    assert doc["format"] == "appforge-export" and doc["format_version"] == 1
    (app,) = doc["apps"]
    assert app["yaml"] == APP.replace("Backed up", "Two")
    assert [v["version"] for v in app["versions"]] == [1, 2]
    assert "prompts" not in doc and "runs" not in doc
    full = tmp_path / "full.json"
    result = runner.invoke(
        main,
        ["export", "--filename", str(full), "--runs", "--prompts"],
        env=_env(settings),
        catch_exceptions=False,
    )
    assert "1 prompts" in result.stdout and "1 runs" in result.stdout
    doc = json.loads(full.read_text())
    assert [v["version_number"] for v in doc["prompts"]["prompt_versions"]] == [1]
    assert [lab["label"] for lab in doc["prompts"]["prompt_labels"]] == ["production"]
    assert doc["runs"][0]["status"] == "succeeded"
    assert "token_hash" not in full.read_text()
