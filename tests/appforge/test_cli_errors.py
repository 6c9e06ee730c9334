"""The CLI for a new user: every example app runs on a fresh home, errors are one line
(exit 1, no traceback; ``--debug`` shows it), ``--home``, and names wherever a
datasource, use case or prompt is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from ports import free_port

from appforge.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples"
APPS = sorted(EXAMPLES.glob("*.yaml")) + sorted((EXAMPLES / "flows").glob("*.py"))
SAMPLE = {"string": "How do refunds work?\n\nRefunds take five days.", "integer": "2"}


def _inputs(path: Path) -> list[str]:
    """``--input`` pairs for the app's required inputs."""
    from apps_yaml.loader import load_file
    from apps_yaml.schema import InputField

    if path.suffix == ".py":
        from appforge.cli.run import _load_flow

        declared = {
            k: InputField.model_validate(v)
            for k, v in _load_flow(path).app_document()["input"].items()
        }
    else:
        declared = load_file(path).input
    return [
        arg
        for key, field in declared.items()
        if field.required
        for arg in ("--input", f"{key}={SAMPLE[field.type]}")
    ]


@pytest.mark.parametrize("path", APPS, ids=[p.name for p in APPS])
def test_every_example_app_runs_on_a_fresh_home(
    path: Path, tmp_path: Path, local_provider: Any, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path / "not-this-one"))
    home = tmp_path / "fresh"
    result = CliRunner().invoke(
        main,
        ["--home", str(home), "run", str(path), *_inputs(path), "--json"],
        obj={"providers": {"local": local_provider}},
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    output = json.loads(result.stdout)
    assert output
    assert (home / "appforge.db").exists() and not (tmp_path / "not-this-one").exists()
    if path.name == "support-bot.yaml":
        # Its datasource is not in a fresh home: retrieval finds nothing, said once.
        assert output["sources"] == []
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "no datasource 'help-center'" in warnings[0]
        assert "appforge datasources create help-center" in warnings[0]


def _appforge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``appforge`` command in a child process (this checkout first on the path)."""
    env = {**os.environ, "APPFORGE_HOME": str(cwd / "home")}
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES.parents[1]), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", "from appforge.cli import main; main()", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _one_line(result: subprocess.CompletedProcess[str] | Any, code: str) -> str:
    """The command failed with exit 1 and one line ``error [code]: ...``, no traceback."""
    exit_code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert exit_code == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if hasattr(result, "exception"):  # in this process: nothing escaped the command
        assert isinstance(result.exception, SystemExit), result.exc_info
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}]: "), result.stderr
    return str(lines[0])


def test_errors_are_one_line_with_exit_code_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The command's main, called in this process as the entry point calls it (a child
    # process each would only add its start-up); the traceback of --debug is what the
    # interpreter prints, so that one runs in a child process.
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"APPFORGE_HOME": str(tmp_path / "home")})
    url = f"http://127.0.0.1:{free_port()}"
    down = runner.invoke(main, ["apps", "list", "--url", url, "--token", "t"])
    line = _one_line(down, "SERVER_UNREACHABLE")
    assert url in line and "is it running?" in line
    missing = _one_line(runner.invoke(main, ["run", "missing.yaml"]), "FILE_ERROR")
    assert "missing.yaml" in missing and "does not exist" in missing
    (tmp_path / "bad.yaml").write_text("name: x\nsteps: [\n")
    bad_yaml = _one_line(runner.invoke(main, ["run", "bad.yaml"]), "YAML_INVALID")
    assert "line 3" in bad_yaml
    unwritable = runner.invoke(main, ["export", "--json-path", "no/such/dir/out.json"])
    assert "no/such/dir/out.json" in _one_line(unwritable, "FILE_ERROR")
    debug = _appforge("--debug", "apps", "list", "--url", url, "--token", "t", cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ConnectError" in debug.stderr


@pytest.fixture
def cli(client: TestClient, admin_token: str) -> tuple[CliRunner, dict[str, object], list[str]]:
    return CliRunner(), {"http": client}, ["--url", "http://testserver", "--token", admin_token]


def test_api_errors_are_one_line(cli: tuple[CliRunner, dict[str, object], list[str]]):
    runner, obj, auth = cli
    wrong = runner.invoke(
        main, ["apps", "list", "--url", "http://testserver", "--token", "nope"], obj=obj
    )
    assert "nope" not in _one_line(wrong, "TOKEN_INVALID")
    folder = Path(__file__).parent
    gone = runner.invoke(main, ["datasources", "add", "kb", str(folder), *auth], obj=obj)
    assert "'kb'" in _one_line(gone, "DATASOURCE_NOT_FOUND")
    unknown = runner.invoke(main, ["prompts", "list", "no-such-case", *auth], obj=obj)
    _one_line(unknown, "USE_CASE_NOT_FOUND")


def test_names_wherever_a_datasource_use_case_or_prompt_is_named(
    cli: tuple[CliRunner, dict[str, object], list[str]], client: TestClient, tmp_path: Path
):
    runner, obj, auth = cli
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Refunds\nRefunds take five days.")
    made = runner.invoke(main, ["datasources", "create", "kb", *auth], obj=obj)
    assert made.exit_code == 0, made.stderr
    added = runner.invoke(main, ["datasources", "add", "kb", str(folder), *auth], obj=obj)
    assert added.exit_code == 0, added.stderr
    assert "added 1 entries: 1 ready" in added.stdout
    uc = client.post("/api/v1/use-cases", json={"name": "Support"}).json()["id"]
    pid = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greet"}).json()["id"]
    client.post(f"/api/v1/prompts/{pid}/versions", json={"type": "text", "template_text": "Hi"})
    listed = runner.invoke(main, ["prompts", "list", "Support", *auth], obj=obj)
    assert listed.stdout.strip() == f"{pid}  greet"
    done = runner.invoke(
        main, ["prompts", "promote", "greet", "1", "--label", "beta", *auth], obj=obj
    )
    assert done.exit_code == 0, done.stderr
    rendered = client.post(f"/api/v1/prompts/{pid}/render", json={"label": "beta"})
    assert rendered.json()["text"] == "Hi"


def test_home_option_and_json_path_spellings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path / "env-home"))
    runner = CliRunner()
    home = ["--home", str(tmp_path / "chosen")]
    made = runner.invoke(main, [*home, "token", "create", "deploy", "--admin"])
    assert made.exit_code == 0, made.stderr
    assert "deploy" in runner.invoke(main, [*home, "token", "list"]).stdout
    assert "deploy" not in runner.invoke(main, ["token", "list"]).stdout  # APPFORGE_HOME's
    after = runner.invoke(main, ["token", "list", "--home", str(tmp_path / "chosen")])
    assert "deploy" in after.stdout  # --home after the command's name too
    for flag in ("--json-path", "--json_path"):
        out = tmp_path / f"backup{flag}.json"
        done = runner.invoke(main, [*home, "backup", flag, str(out)])
        assert done.exit_code == 0, done.stderr
        assert any(
            row["name"] == "deploy" for row in json.loads(out.read_text())["tables"]["tokens"]
        )
    for command, old in (
        ("backup", "--json_path"),
        ("restore", "--json_path"),
        ("export", "--filename"),
    ):
        shown = runner.invoke(main, [command, "--help"]).stdout
        assert "--json-path" in shown and old not in shown
    exported = runner.invoke(main, [*home, "export", "--filename", str(tmp_path / "e.json")])
    assert exported.exit_code == 0 and "0 apps" in exported.stdout
