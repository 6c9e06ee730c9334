"""The appforge command: version, run, token management."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appforge import __version__
from appforge.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path / "home"))
    return CliRunner()


@pytest.fixture
def obj(local_provider: Any) -> dict[str, Any]:
    return {"providers": {"local": local_provider}}


def test_cli_version(runner: CliRunner):
    result = runner.invoke(main, ["version"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout.strip() == f"appforge {__version__}"


def test_cli_run_streams_output(runner: CliRunner, obj: dict[str, Any], tmp_path: Path):
    app = tmp_path / "app.yaml"
    app.write_text(
        "name: Hi\ninput:\n  who: {type: string, required: true}\n  n: {type: integer}\n"
        "steps:\n  - id: a\n    kind: llm\n    prompt: {user: 'Greet {{ input.who }}'}\n"
        "    params: {temperature: 0, seed: 1, max_tokens: 12}\n"
        "output:\n  greeting: '{{ a.text }}'\n  n: '{{ input.n }}'\n"
    )
    args = ["run", str(app), "--input", "who=Ada", "--input", "n=3", "--json"]
    result = runner.invoke(main, args, obj=obj, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["n"] == 3
    assert out["greeting"]
    text = runner.invoke(main, args[:-1], obj=obj, catch_exceptions=False)
    assert text.exit_code == 0
    assert out["greeting"] in text.stdout
    assert "[greeting]" in text.stdout and "[n] 3" in text.stdout


def test_cli_run_example_app(runner: CliRunner, obj: dict[str, Any]):
    from apps_yaml.loader import load_file

    path = EXAMPLES / "summarize.yaml"
    name = next(iter(load_file(path).input))
    result = runner.invoke(
        main,
        ["run", str(path), "--input", f"{name}=Rain fell all day."],
        obj=obj,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()


def test_cli_run_bad_app_reports_line(runner: CliRunner, tmp_path: Path):
    app = tmp_path / "bad.yaml"
    app.write_text(
        "name: x\nsteps:\n  - id: a\n    kind: llm\n    prompt: {user: '{{ nope }}'}\n"
        "output: {a: '{{ a.text }}'}\n"
    )
    result = runner.invoke(main, ["run", str(app)], catch_exceptions=False)
    assert result.exit_code == 1  # a bad file: one error, its problems by line
    assert result.stdout == ""
    assert "APP_INVALID" in result.stderr
    assert "line 5" in result.stderr and "nope" in result.stderr


def test_cli_run_bad_input(runner: CliRunner, tmp_path: Path):
    app = tmp_path / "app.yaml"
    app.write_text(
        "name: x\ninput: {n: {type: integer, required: true}}\nsteps:\n"
        "  - {id: a, kind: llm, prompt: {user: hi}}\noutput: {a: '{{ a.text }}'}\n"
    )
    result = runner.invoke(main, ["run", str(app), "--input", "n=abc"])
    assert result.exit_code == 2
    assert "n must be integer" in result.stderr
    result = runner.invoke(main, ["run", str(app)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "INPUT_INVALID" in result.stderr


def test_cli_tokens_create_list_revoke(runner: CliRunner):
    created = runner.invoke(main, ["token", "create", "deploy", "--admin"], catch_exceptions=False)
    assert created.exit_code == 0
    value = created.stdout.strip()
    assert value.startswith("af_")
    assert "not shown again" in created.stderr
    listed = runner.invoke(main, ["token", "list"], catch_exceptions=False)
    assert "deploy" in listed.stdout and value not in listed.stdout
    token_id = next(line.split()[0] for line in listed.stdout.splitlines() if "deploy" in line)
    revoked = runner.invoke(main, ["token", "revoke", token_id], catch_exceptions=False)
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(main, ["token", "list"]).stdout
    missing = runner.invoke(main, ["token", "revoke", "nope"])
    assert missing.exit_code == 1
    assert "TOKEN_NOT_FOUND" in missing.stderr


def test_cli_token_create_runner_key_for_an_app(
    runner: CliRunner, make_client: Any, make_settings: Any
):
    api = make_client(make_settings())  # the same home as the CLI
    app = api.post(
        "/api/apps",
        content="name: Shop bot\nsteps:\n  - {id: a, kind: llm, prompt: {user: hi}}\n"
        "output: {a: '{{ a.text }}'}\n",
        headers={"Content-Type": "application/yaml"},
    ).json()
    args = ["token", "create", "widget", "--role", "runner", "--app", "Shop bot"]
    args += ["--origin", "https://shop.example", "--rate-limit", "30/minute"]
    made = runner.invoke(main, args, catch_exceptions=False)
    assert made.exit_code == 0, made.stderr
    assert "(runner)" in made.stderr
    me = api.get("/api/tokens/me", headers={"Authorization": f"Token {made.stdout.strip()}"})
    assert me.json()["role"] == "runner" and me.json()["apps"] == [app["uuid"]]
    assert me.json()["origins"] == ["https://shop.example"]
    assert me.json()["rate_limit"] == "30/minute"
    listed = runner.invoke(main, ["token", "list"], catch_exceptions=False).stdout
    assert any("widget" in line and "runner" in line for line in listed.splitlines())
    for bad in (["--role", "editor", "--origin", "https://x.example"], ["--app", "nope"]):
        refused = runner.invoke(main, ["token", "create", "bad", *bad])
        assert refused.exit_code == 2 and "error [" in refused.stderr, refused.stderr
    runner.invoke(main, ["token", "revoke", me.json()["id"]], catch_exceptions=False)
    # The command line's changes are audited too (refused ones are not), as "cli".
    events = api.get("/api/audit", params={"actor": "cli"}).json()
    assert [(e["action"], e["target_id"]) for e in events] == [
        ("token.revoked", me.json()["id"]), ("token.created", me.json()["id"]),
    ]  # fmt: skip
    assert events[1]["details"]["role"] == "runner" and events[1]["actor_id"] is None


def test_cli_run_app_pinning_a_managed_prompt(
    runner: CliRunner,
    obj: dict[str, Any],
    tmp_path: Path,
    make_client: Any,
    make_settings: Any,
):
    # The prompt lives in the home the CLI uses (APPFORGE_HOME = tmp_path / "home").
    api = make_client(make_settings())
    uc = api.post("/api/v1/use-cases", json={"name": "Support"}).json()["id"]
    pid = api.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "support-answer"})
    version = {"type": "text", "template_text": "Say the word {{ word }} once."}
    assert api.post(f"/api/v1/prompts/{pid.json()['id']}/versions", json=version).status_code == 201
    promote = api.post(
        f"/api/v1/prompts/{pid.json()['id']}/versions/1/promote", json={"label": "production"}
    )
    assert promote.status_code == 200, promote.text
    app = tmp_path / "pinned.yaml"
    app.write_text(
        "name: Pinned\ninput:\n  word: {type: string, required: true}\n"
        "steps:\n  - id: a\n    kind: llm\n"
        "    prompt: {ref: support-answer, variables: {word: '{{ input.word }}'}}\n"
        "    params: {temperature: 0, seed: 1, max_tokens: 8}\n"
        "output:\n  said: '{{ a.text }}'\n"
    )
    args = ["run", str(app), "--input", "word=apple", "--json"]
    result = runner.invoke(main, args, obj=obj, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    said = json.loads(result.stdout)["said"]
    # The same app through the API answers the same (temperature 0, same seed).
    created = api.post(
        "/api/apps", content=app.read_text(), headers={"Content-Type": "application/yaml"}
    )
    ran = api.post(f"/api/apps/{created.json()['uuid']}/run", json={"input": {"word": "apple"}})
    assert ran.status_code == 200, ran.text
    assert said == ran.json()["output"]["said"]
