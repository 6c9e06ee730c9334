"""A caller who leaves a streamed run while the model server has gone silent
mid-answer: the run stops at once (its connection to the model is cut) and is
stored ``cancelled`` with what it produced, instead of holding a run thread until
the provider's read timeout. A real ``appforge serve``; the model is an OpenAI
look-alike on 127.0.0.1 that sends one chunk and then nothing (the network edge)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai_edge import EdgeServer, Reply, serve_edge, sse_chunk
from server_process import ServerProcess
from waiting import poll_until

TOKEN = "af_silent_model_admin_token_0123456789"
AUTH = {"Authorization": f"Token {TOKEN}"}
APP = """\
version: 1
name: Stalls
input:
  q: {type: string}
steps:
  - id: answer
    kind: llm
    prompt: {user: "{{ input.q }}"}
output:
  answer: "{{ answer.text }}"
"""


@pytest.fixture
def edge() -> Iterator[EdgeServer]:
    with serve_edge() as server:
        events = [sse_chunk("The first words", None), sse_chunk(" and more", None)]
        server.replies = [Reply(200, None, sse=events, hold=True, chunked=True)]
        yield server


def test_leaving_a_run_whose_model_went_silent_frees_it_at_once(
    edge: EdgeServer, start_server: Callable[..., ServerProcess], tmp_path: Path
):
    server = start_server(
        {
            "APPFORGE_HOME": str(tmp_path / "home"),
            "APPFORGE_ADMIN_TOKEN": TOKEN,
            "APPFORGE_OPENAI__BASE_URL": edge.url,
            "APPFORGE_OPENAI__API_KEY": "fake",
            # Waits this long for the next chunk, and the run may take this long:
            # only the cut ends the run within the test's wait.
            "APPFORGE_OPENAI__TIMEOUT": "600",
            "APPFORGE_RUNS__TIMEOUT_SECONDS": "900",
            "APPFORGE_MODELS": json.dumps({"default": "openai:stalls"}),
        }
    )
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=60) as api:
        created = api.post("/api/apps", content=APP, headers={"Content-Type": "application/yaml"})
        uuid = created.json()["uuid"]
        body = {"input": {"q": "Say a lot."}, "stream": True}
        with api.stream("POST", f"/api/apps/{uuid}/run", json=body) as r:
            run_id = r.headers["x-run-id"]
            lines = r.iter_lines()
            first = json.loads(next(lines))
            assert first["output"] == {"answer": "The first words"}
            assert not edge.hung_up.is_set()
        # Leaving the block closes the connection: the model server, silent since its
        # first chunk, sees ours go too.
        assert edge.hung_up.wait(60)

        def ended() -> dict[str, Any] | None:
            run: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
            return None if run["status"] == "running" else run

        run = poll_until(ended, timeout=60, interval=0.1)
    assert (run["status"], run["error"]["code"]) == ("cancelled", "CANCELLED")
    assert run["output"] == {"answer": "The first words"}
