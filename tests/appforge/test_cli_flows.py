"""`appforge run flow.py --session` and `--serve`: a Python flow run through the API here."""

from __future__ import annotations

import json
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

FLOW = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples" / "flows"
EXAMPLE = FLOW / "summarize_many.py"
TEXT = "Cats sleep most of the day.\n\nDogs like long walks in the park."


def test_run_flow_with_session_stores_turns_in_the_home(
    tmp_path: Path,
    local_provider: Any,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
):
    home = tmp_path / "home"
    monkeypatch.setenv("APPFORGE_HOME", str(home))
    monkeypatch.delenv("APPFORGE_ADMIN_TOKEN", raising=False)
    runner = CliRunner()
    obj = {"providers": {"local": local_provider}}
    outputs = []
    for _ in range(2):
        result = runner.invoke(
            main,
            ["run", str(EXAMPLE), "--session", "s1", "--input", f"text={TEXT}"],
            obj=obj,
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("[summary] ")
        assert result.stdout.endswith("\n[paragraphs] 2\n")
        assert "session: s1" in result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]  # temperature 0, a seed: the same summaries
    client = make_client(make_settings(home=home))
    [app] = client.get("/api/apps").json()
    assert (app["name"], app["version"]) == ("summarize-many", 1)  # saved once, then found
    assert app["definition"]["flow"] == "summarize-many"
    assert app["definition"]["input"]["text"]["required"] is True
    turns = client.get("/api/sessions/s1").json()["turns"]
    assert [t["input"]["text"] for t in turns] == [TEXT, TEXT]
    run = client.get(f"/api/runs/{turns[1]['run_id']}").json()
    assert [s["id"] for s in run["steps"]] == ["split#1", "summarize#2", "summarize#3", "join#4"]
    assert all(s["status"] == "succeeded" for s in run["steps"])
    # the streamed answer, as printed from its chunks, is the stored output
    output = run["output"]
    assert outputs[1] == (
        f"[summary] {output['summary']}\n[points] {json.dumps(output['points'])}\n"
        f"[paragraphs] {output['paragraphs']}\n"
    )
    # the declared input is checked, as for a YAML app
    bad = runner.invoke(main, ["run", str(EXAMPLE), "--session", "s1"], obj=obj)
    assert bad.exit_code == 2 and "INPUT_INVALID" in bad.stderr and "text" in bad.stderr


def test_run_flow_json_through_the_api(
    tmp_path: Path, local_provider: Any, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(
        main,
        ["run", str(EXAMPLE), "--session", "j", "--input", f"text={TEXT}", "--json"],
        obj={"providers": {"local": local_provider}},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    output = json.loads(result.stdout)  # the streamed answer stitched from its chunks
    assert output["paragraphs"] == 2 and len(output["points"]) == 2
    assert isinstance(output["summary"], str) and output["summary"]
    assert "session: j" in result.stderr


STREAMER = """\
from apps_yaml.flows import Flow, StepContext, StepResult

flow = Flow("streamer")


@flow.step("write", initial=True)
def write(ctx: StepContext, topic: str, honest: bool = True) -> StepResult:
    text = ctx.llm(f"Say hello about {topic}.", max_tokens=16, temperature=0, seed=1,
                   stream="answer")
    return StepResult(answer=text if honest else text + "!", words=len(text.split()))
"""


def test_run_flow_prints_the_streamed_answer(
    tmp_path: Path, local_provider: Any, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path / "home"))
    flow_file = tmp_path / "streamer.py"
    flow_file.write_text(STREAMER)
    runner = CliRunner()
    obj = {"providers": {"local": local_provider}}
    args = ["run", str(flow_file), "--input", "topic=cats"]
    as_json = runner.invoke(main, [*args, "--json"], obj=obj, catch_exceptions=False)
    assert as_json.exit_code == 0, as_json.stderr
    output = json.loads(as_json.stdout)
    assert output["answer"] and output["words"] == len(output["answer"].split())
    printed = runner.invoke(main, args, obj=obj, catch_exceptions=False)
    assert printed.exit_code == 0, printed.stderr
    assert printed.stdout == f"[answer] {output['answer']}\n[words] {output['words']}\n"
    assert printed.stderr == ""
    # a step that returns something else than it streamed: the text shown, then the error
    bad = runner.invoke(main, [*args, "--input", "honest=false"], obj=obj)
    assert bad.exit_code == 1
    assert bad.stdout == f"[answer] {output['answer']}\n"
    assert "error [FLOW_INVALID]: step 'write' streamed output 'answer'" in bad.stderr


def test_run_flow_refuses_a_file_without_a_flow(tmp_path: Path):
    not_a_flow = tmp_path / "f.py"
    not_a_flow.write_text("x = 1\n")
    for flags in (["--session", "s"], ["--serve"], []):
        result = CliRunner().invoke(main, ["run", str(not_a_flow), *flags])
        assert result.exit_code == 2 and "exactly one Flow" in result.stderr, flags


def test_run_flow_serve_serves_the_flow(tmp_path: Path):
    token = "af_serve_token_0123456789"
    with run_serve(EXAMPLE, tmp_path / "home", token) as (port, lines):
        serving = next(ln for ln in lines if ln.startswith("serving"))
        assert serving.startswith("serving summarize_many.py as app ")
        url = lines[-1].split("POST ", 1)[1].strip().removesuffix("[/<session id>]")
        assert url == f"http://127.0.0.1:{port}/api/apps/{serving.split()[-1]}/run"
        headers = {"Authorization": f"Token {token}"}
        r = httpx.post(f"{url}/s-1", json={"input": {"text": TEXT}}, headers=headers, timeout=600)
        assert r.status_code == 200, r.text
        assert r.json()["output"]["paragraphs"] == 2
        assert r.json()["session"] == {"id": "s-1"}
        r = httpx.post(url, json={"input": {}}, headers=headers, timeout=600)
        assert r.status_code == 422 and r.json()["error"]["code"] == "INPUT_INVALID"
