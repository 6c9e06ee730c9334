"""A caller who leaves a streamed run while the model server has gone silent
mid-answer: the run stops at once (its connection to the model is cut) and is
stored ``cancelled`` with what it produced, instead of holding a run thread until
the provider's read timeout. A real ``appforge serve``; the model is an OpenAI
look-alike on 127.0.0.1 that sends one chunk and then nothing (the network edge)."""

from __future__ import annotations

import json
import socket
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


@pytest.mark.parametrize("route", ["run", "v1"])
def test_leaving_a_run_not_streamed_whose_model_has_not_begun_frees_it_at_once(
    start_server: Callable[..., ServerProcess], tmp_path: Path, route: str
):
    """A run that is not streamed, whose model server took the call and has not begun to
    answer: its caller hangs up. The run is cancelled, its model call cut and the run
    stored ``cancelled``. Before, nothing watched the caller of a run not streamed:
    the model wrote (and billed) the answer for nobody, and the run held its thread
    and its place among the app's active runs until then."""
    with serve_edge() as edge:
        edge.replies = [Reply(200, None, sse=[sse_chunk("late", None)], mute=True)]
        server = start_server(
            {
                "APPFORGE_HOME": str(tmp_path / "home"),
                "APPFORGE_ADMIN_TOKEN": TOKEN,
                "APPFORGE_OPENAI__BASE_URL": edge.url,
                "APPFORGE_OPENAI__API_KEY": "fake",
                "APPFORGE_OPENAI__TIMEOUT": "600",
                "APPFORGE_RUNS__TIMEOUT_SECONDS": "900",
                "APPFORGE_MODELS": json.dumps({"default": "openai:stalls"}),
            }
        )
        with httpx.Client(base_url=server.base, headers=AUTH, timeout=60) as api:
            chat = APP.replace("name: Stalls\n", "name: Stalls\ntype: chat\n")  # for /v1 too
            chat = chat.replace("{type: string}", "{type: string, required: true}")
            made = api.post("/api/apps", content=chat, headers={"Content-Type": "application/yaml"})
            assert made.status_code == 201, made.text
            uuid = made.json()["uuid"]
            if route == "run":
                path, body = f"/api/apps/{uuid}/run", {"input": {"q": "Say a lot."}}
            else:
                question = [{"role": "user", "content": "Say a lot."}]
                path, body = "/v1/chat/completions", {"model": uuid, "messages": question}
            raw = json.dumps(body).encode()
            caller = socket.create_connection(("127.0.0.1", server.port))
            caller.sendall(
                f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Token {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
                + raw
            )
            poll_until(lambda: edge.requests, detail=server.output)  # the model has the call
            caller.close()
            assert edge.hung_up.wait(60)  # the model server saw the call go

            def ended() -> list[dict[str, Any]] | None:
                runs: list[dict[str, Any]] = api.get("/api/runs").json()
                return runs if runs and runs[0]["status"] != "running" else None

            runs = poll_until(ended, timeout=60, interval=0.1)
    assert [run["status"] for run in runs] == ["cancelled"]
