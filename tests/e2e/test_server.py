"""End to end: the real `appforge serve` process on a free loopback port.

Covers the README's curl flow (create, run, run again in the session, stream)
and what only a real socket shows: a client that disconnects mid-stream stops
generation and leaves a ``cancelled`` run with the partial output, and the
first chunk arrives while the model is still generating.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ServerProcess
from waiting import poll_until

TOKEN = "af_e2e_admin_token_abcdefghijklmnop"

STORY_APP = """\
version: 1
name: Storyteller
input:
  topic: {type: string, required: true}
steps:
  - id: story
    kind: llm
    prompt:
      user: "Write a very long story about {{ input.topic }}."
    params: {temperature: 0, seed: 1, max_tokens: 400}
output:
  story: "{{ story.text }}"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("home")
    process = ServerProcess({"APPFORGE_HOME": str(home), "APPFORGE_ADMIN_TOKEN": TOKEN})
    yield process.base
    process.stop()


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server, headers={"Authorization": f"Token {TOKEN}"}, timeout=60
    ) as client:
        yield client


def test_server_readme_flow(api: httpx.Client):
    example = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples" / "summarize.yaml"
    created = api.post(
        "/api/apps", content=example.read_bytes(), headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    uuid = created.json()["uuid"]
    doc = created.json()["definition"]
    name = next(iter(doc["input"]))
    first = api.post(f"/api/apps/{uuid}/run", json={"input": {name: "Cats sleep a lot."}})
    assert first.status_code == 200, first.text
    sid = first.json()["session"]["id"]
    again = api.post(f"/api/apps/{uuid}/run/{sid}", json={"input": {name: "Dogs bark."}})
    assert again.json()["session"]["id"] == sid
    lines = []
    with api.stream(
        "POST", f"/api/apps/{uuid}/run", json={"input": {name: "Cats sleep a lot."}, "stream": True}
    ) as r:
        for line in r.iter_lines():
            if line:
                lines.append(json.loads(line))
    assert lines[-1]["done"] is True
    stitched: dict[str, str] = {}
    for chunk in lines[:-1]:
        for key, piece in chunk["output"].items():
            stitched[key] = stitched.get(key, "") + piece
    assert stitched == first.json()["output"]


def test_server_stream_first_chunk_before_model_finishes(api: httpx.Client):
    uuid = api.post(
        "/api/apps", content=STORY_APP, headers={"Content-Type": "application/yaml"}
    ).json()["uuid"]
    with api.stream(
        "POST", f"/api/apps/{uuid}/run", json={"input": {"topic": "a lighthouse"}, "stream": True}
    ) as r:
        chunks = (json.loads(line) for line in r.iter_lines() if line)
        first = next(chunks)
        # The first chunk is here while the run still generates: chunks are sent as
        # the model writes them, not all at once at the end.
        assert api.get(f"/api/runs/{r.headers['x-run-id']}").json()["status"] == "running"
        rest = list(chunks)
    assert len(rest) >= 10
    assert "story" in first["output"] and rest[-1]["done"] is True


def test_server_disconnect_mid_stream_stores_cancelled_run(api: httpx.Client):
    uuid = api.post(
        "/api/apps", content=STORY_APP, headers={"Content-Type": "application/yaml"}
    ).json()["uuid"]
    with httpx.Client(base_url=str(api.base_url), headers=dict(api.headers), timeout=60) as c:
        with c.stream(
            "POST",
            f"/api/apps/{uuid}/run",
            json={"input": {"topic": "the sea"}, "stream": True},
        ) as r:
            run_id = r.headers["x-run-id"]
            lines = r.iter_lines()
            first = json.loads(next(lines))
            assert "story" in first["output"]
        # leaving both blocks closes the connection mid-generation

    def finished_run() -> dict[str, Any] | None:
        run: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        return None if run["status"] == "running" else run

    run = poll_until(finished_run, interval=0.2)
    assert run["status"] == "cancelled"
    assert run["error"]["code"] == "CANCELLED"
    assert run["output"]["story"].startswith(first["output"]["story"])
    assert 0 < run["usage"]["completion_tokens"] < 400
    # a cancelled run does not become a session turn
    session = api.get(f"/api/sessions/{run['session_id']}").json()
    assert session["turns"] == []
