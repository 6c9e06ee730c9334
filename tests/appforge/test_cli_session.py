"""`appforge run --session` and `--serve`: a YAML app run through the API in this process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from ports import run_serve

from appforge.cli import main
from appforge.core.settings import Settings

APP = """\
name: Remembers
type: chat
input:
  msg: {type: string, required: true}
steps:
  - id: a
    kind: llm
    prompt: {user: "{{ input.msg }}"}
    history: 3
    params: {temperature: 0, seed: 1, max_tokens: 8}
output:
  a: "{{ a.text }}"
"""


def test_run_with_session_keeps_history_in_the_home(
    tmp_path: Path,
    local_provider: Any,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
):
    home = tmp_path / "home"
    monkeypatch.setenv("APPFORGE_HOME", str(home))
    monkeypatch.delenv("APPFORGE_ADMIN_TOKEN", raising=False)
    app = tmp_path / "app.yaml"
    app.write_text(APP)
    runner = CliRunner()
    obj = {"providers": {"local": local_provider}}
    for msg in ("My name is Ada.", "What is my name?"):
        result = runner.invoke(
            main,
            ["run", str(app), "--session", "s-1", "--input", f"msg={msg}"],
            obj=obj,
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip()
        assert "session: s-1" in result.stderr
    # the same file again is the same app (no second app, no new version)
    client = make_client(make_settings(home=home))
    apps = client.get("/api/apps").json()
    assert [(a["name"], a["version"]) for a in apps] == [("Remembers", 1)]
    turns = client.get("/api/sessions/s-1").json()["turns"]
    assert [t["input"]["msg"] for t in turns] == ["My name is Ada.", "What is my name?"]
    run = client.get(f"/api/runs/{turns[1]['run_id']}").json()
    assert len(run["steps"][0]["messages"]) == 3  # the first turn came back as history
    # the command's own token was revoked when it ended
    tokens = client.get("/api/tokens").json()
    assert all(t["revoked_at"] for t in tokens if t["name"].startswith("appforge run"))
    bad = runner.invoke(main, ["run", str(app), "--session", "s-1"], obj=obj)
    assert bad.exit_code == 2 and "INPUT_INVALID" in bad.stderr


def test_run_serve_serves_the_app(tmp_path: Path):
    app = tmp_path / "app.yaml"
    app.write_text(APP)
    token = "af_serve_token_0123456789"
    with run_serve(app, tmp_path / "home", token) as (port, lines):
        line = next(ln for ln in lines if ln.startswith("serving"))
        assert line.startswith("serving app.yaml as app ")
        uuid = line.split()[-1]
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/apps/{uuid}/run",
            json={"input": {"msg": "hi"}},
            headers={"Authorization": f"Token {token}"},
            timeout=600,
        )
        assert r.status_code == 200 and r.json()["output"]["a"]


def test_run_session_refuses_a_yaml_app_naming_a_flow(tmp_path: Path, local_provider: Any):
    app = tmp_path / "app.yaml"
    app.write_text("name: Ghost\nflow: ghost\n")
    obj = {"providers": {"local": local_provider}}
    env = {"APPFORGE_HOME": str(tmp_path / "home")}
    result = CliRunner(env=env).invoke(main, ["run", str(app), "--session", "s"], obj=obj)
    assert result.exit_code == 2 and "appforge run flow.py --serve" in result.stderr
    local = CliRunner(env=env).invoke(main, ["run", str(app)], obj=obj)
    assert local.exit_code == 2 and "FLOW_NOT_SERVED" in local.stderr
