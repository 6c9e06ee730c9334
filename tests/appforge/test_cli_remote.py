"""CLI commands that drive a running server through the client (apps, datasources, prompts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from appforge.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples"


@pytest.fixture
def cli(client: TestClient, admin_token: str) -> tuple[CliRunner, dict[str, object], list[str]]:
    return CliRunner(), {"http": client}, ["--url", "http://testserver", "--token", admin_token]


def test_cli_apps_create_and_list(
    cli: tuple[CliRunner, dict[str, object], list[str]], tmp_path: Path
):
    runner, obj, auth = cli
    made = runner.invoke(
        main,
        ["apps", "create", str(EXAMPLES / "summarize.yaml"), *auth],
        obj=obj,
        catch_exceptions=False,
    )
    assert made.exit_code == 0, made.stderr
    uuid = made.stdout.strip()
    listed = runner.invoke(main, ["apps", "list", *auth], obj=obj, catch_exceptions=False)
    assert listed.stdout.startswith(uuid) and "Summarize" in listed.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps: []\noutput: {}\n")
    refused = runner.invoke(main, ["apps", "create", str(bad), *auth], obj=obj)
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "APP_INVALID" in refused.stderr and "line" in refused.stderr
    wrong = runner.invoke(
        main, ["apps", "list", "--url", "http://testserver", "--token", "no"], obj=obj
    )
    assert wrong.exit_code == 1 and "TOKEN_INVALID" in wrong.stderr


def test_cli_datasources_add_folder_with_progress(
    cli: tuple[CliRunner, dict[str, object], list[str]], tmp_path: Path
):
    runner, obj, auth = cli
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Refunds\nRefunds take five days.")
    (folder / "sub" / "b.txt").write_text("Shipping is free above 50 euros.")
    made = runner.invoke(
        main,
        ["datasources", "create", "kb", "--type", "file", *auth],
        obj=obj,
        catch_exceptions=False,
    )
    ds = made.stdout.strip()
    added = runner.invoke(
        main,
        ["datasources", "add", ds, str(folder), "-m", "team=support", *auth],
        obj=obj,
        catch_exceptions=False,
    )
    assert added.exit_code == 0, added.stderr
    assert "added 2 entries: 2 ready, 0 failed, 0 refused" in added.stdout
    assert "adding entries" in added.stderr  # the progress bar goes to stderr
    again = runner.invoke(
        main, ["datasources", "add", ds, str(folder), "--no-wait", *auth], obj=obj
    )
    assert again.exit_code == 1  # the same files again are duplicates, reported
    assert again.stderr.count("refused") == 2
    listed = runner.invoke(main, ["datasources", "list", *auth], obj=obj)
    assert "kb" in listed.stdout


def test_cli_prompts_list_and_promote(
    cli: tuple[CliRunner, dict[str, object], list[str]], client: TestClient
):
    runner, obj, auth = cli
    uc = client.post("/api/v1/use-cases", json={"name": "UC"}).json()["id"]
    pid = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greet"}).json()["id"]
    client.post(f"/api/v1/prompts/{pid}/versions", json={"type": "text", "template_text": "Hi"})
    listed = runner.invoke(main, ["prompts", "list", uc, *auth], obj=obj, catch_exceptions=False)
    assert listed.stdout.strip() == f"{pid}  greet"
    done = runner.invoke(
        main,
        ["prompts", "promote", pid, "1", "--label", "beta", *auth],
        obj=obj,
        catch_exceptions=False,
    )
    assert done.exit_code == 0 and done.stdout.strip() == "beta -> version 1"
    rendered = client.post(f"/api/v1/prompts/{pid}/render", json={"label": "beta"})
    assert rendered.json()["text"] == "Hi"
    missing = runner.invoke(main, ["prompts", "promote", pid, "9", *auth], obj=obj)
    assert missing.exit_code == 1 and "error [" in missing.stderr
