"""``appforge eval``: an app file over a case file here or on a server (the in-process
app), its table, its exit code on the two sides of the threshold, its JSON result and
a comparison with an earlier one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from appforge.cli import main
from tests.conftest import ADMIN_TOKEN

APP = """\
name: Echo
input:
  q: {type: string, required: true}
steps:
  - id: a
    kind: llm
    prompt: {user: "{{ input.q }}"}
    params: {temperature: 0, seed: 1, max_tokens: 1}
output:
  echo: "{{ input.q }}"
  a: "{{ a.text }}"
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    app, cases, scorers = tmp_path / "app.yaml", tmp_path / "cases.jsonl", tmp_path / "s.yaml"
    app.write_text(APP)
    lines = [
        {"input": {"q": "hello"}, "expected": {"echo": "hello"}},
        {"input": {"q": "bye"}, "expected": {"echo": "ciao"}},
    ]
    cases.write_text("".join(json.dumps(line) + "\n" for line in lines))
    scorers.write_text("- type: equals\n  output: echo\n- {type: tokens, threshold: 100000}\n")
    return {"app": app, "cases": cases, "scorers": scorers}


def test_cli_eval_exits_on_either_side_of_the_threshold(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_provider: Any
):
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path / "home"))
    obj = {"providers": {"local": local_provider}}
    runner = CliRunner()
    base = ["eval", str(files["app"]), str(files["cases"]), "--scorers", str(files["scorers"])]
    out = tmp_path / "first.json"
    passing = runner.invoke(
        main, [*base, "--min-pass-rate", "0.5", "--json", str(out)], obj=obj, catch_exceptions=False
    )
    assert passing.exit_code == 0, passing.stderr
    rows = passing.stdout.splitlines()
    assert rows[0] == "case\tpassed\tequals\ttokens"
    assert rows[1] == "case-1\tyes\t1.00\t1.00" and rows[2] == "case-2\tno\t0.00!\t1.00"
    assert rows[3].startswith("pass rate 50.00% (1/2)")
    result = json.loads(out.read_text())
    assert result["summary"]["pass_rate"] == 0.5
    assert result["results"][1]["scores"][0]["reason"] == "expected ciao, got bye"

    # The first case now expects something else: it regressed, and 0.9 is missed.
    files["cases"].write_text(files["cases"].read_text().replace('"hello"}}', '"hi"}}', 1))
    args = [*base, "--min-pass-rate", "0.9", "--compare", str(out)]
    failing = runner.invoke(main, args, obj=obj)
    assert failing.exit_code == 1
    assert "regressed: case-1" in failing.stdout and "improved: none" in failing.stdout
    assert "pass rate delta: -50.00%" in failing.stdout
    assert "error: pass rate 0.00% is below 90.00%" in failing.stderr


def test_cli_eval_refuses_a_bad_scorers_file(files: dict[str, Path], tmp_path: Path):
    files["scorers"].write_text("scorers: {type: equals}\n")
    args = ["eval", str(files["app"]), str(files["cases"]), "--scorers", str(files["scorers"])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--scorers" in result.stderr


SERVER = ["--server", "http://testserver", "--token", ADMIN_TOKEN]


def test_cli_eval_on_a_server_exits_on_either_side_of_the_threshold(
    files: dict[str, Path], tmp_path: Path, client: TestClient
):
    runner, obj = CliRunner(), {"http": client}
    scorers = ["--scorers", str(files["scorers"])]
    out = tmp_path / "first.json"
    args = [str(files["app"]), str(files["cases"]), *scorers, *SERVER]
    passing = runner.invoke(
        main,
        ["eval", *args, "--min-pass-rate", "0.5", "--json", str(out)],
        obj=obj,
        catch_exceptions=False,
    )
    assert passing.exit_code == 0, passing.stderr
    # The same table as a local run.
    rows = passing.stdout.splitlines()
    assert rows[0] == "case\tpassed\tequals\ttokens"
    assert rows[1] == "case-1\tyes\t1.00\t1.00" and rows[2] == "case-2\tno\t0.00!\t1.00"
    assert rows[3].startswith("pass rate 50.00% (1/2)")
    assert "app Echo (" in passing.stderr and "version 1" in passing.stderr
    assert "dataset cases revision 2 (new revision)" in passing.stderr
    first = json.loads(out.read_text())
    assert first["summary"]["pass_rate"] == 0.5 and first["evaluation"]["status"] == "done"
    assert first["results"][1]["scores"][0]["reason"] == "expected ciao, got bye"
    stored = client.get(f"/api/evaluations/{first['evaluation']['id']}").json()
    assert (stored["dataset_name"], stored["dataset_revision"], stored["app_version"]) == (
        "cases",
        2,
        1,
    )

    # The first case now expects something else; the app is the one already there (--app).
    files["cases"].write_text(files["cases"].read_text().replace('"hello"}}', '"hi"}}', 1))
    again = [str(files["cases"]), *scorers, *SERVER, "--app", "Echo"]
    failing = runner.invoke(
        main, ["eval", *again, "--min-pass-rate", "0.9", "--compare", str(out)], obj=obj
    )
    assert failing.exit_code == 1, failing.stderr
    assert "dataset cases revision 3 (new revision)" in failing.stderr
    assert "regressed: case-1" in failing.stdout and "pass rate delta: -50.00%" in failing.stdout
    assert "error: pass rate 0.00% is below 90.00%" in failing.stderr
    # The case kept its id in the dataset: the server compares the two evaluations too.
    second = client.get("/api/evaluations", params={"dataset": "cases"}).json()[0]
    compared = client.get(
        "/api/evaluations/compare", params={"a": first["evaluation"]["id"], "b": second["id"]}
    ).json()
    assert len(compared["regressed"]) == 1 and compared["improved"] == []


def test_cli_eval_on_a_server_refuses_bad_usage_and_reports_errors(
    files: dict[str, Path], client: TestClient, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("APPFORGE_TOKEN", raising=False)
    runner, obj = CliRunner(), {"http": client}
    app, cases = str(files["app"]), str(files["cases"])
    scorers = ["--scorers", str(files["scorers"])]
    usage = [
        ([app, cases, *scorers, "--app", "Echo"], "--app only with --server"),
        ([app, cases, *scorers, "--server", "http://testserver"], "--server needs --token"),
        ([app, *scorers, *SERVER], "give APP_FILE CASES_FILE (1 files given)"),
        ([app, cases, *scorers, *SERVER, "--app", "Echo"], "CASES_FILE with --app"),
    ]
    for args, message in usage:
        result = runner.invoke(main, ["eval", *args], obj=obj)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    missing = runner.invoke(main, ["eval", cases, *scorers, *SERVER, "--app", "Nope"], obj=obj)
    assert missing.exit_code == 1 and "error [APP_NOT_FOUND]" in missing.stderr
    files["cases"].write_text("not json\n")
    bad = runner.invoke(main, ["eval", app, cases, *scorers, *SERVER], obj=obj)
    assert bad.exit_code == 1 and "error [CASE_FILE_INVALID]: line 1" in bad.stderr
    wrong = runner.invoke(
        main,
        ["eval", app, cases, *scorers, "--server", "http://testserver", "--token", "no"],
        obj=obj,
    )
    assert wrong.exit_code == 1 and "TOKEN_INVALID" in wrong.stderr
