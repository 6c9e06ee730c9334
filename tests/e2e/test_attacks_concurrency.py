"""Issue 15, findings 7-9, replayed against real `appforge serve` processes (SQLite, PostgreSQL).

7. Concurrent writes: 20 PATCHes of one app at once each get a version or 409
   APP_VERSION_CONFLICT; 20 first runs of one new session at once run one by
   one or get 409 SESSION_BUSY before the model is called; no run stays running.
8. A server killed mid-run (SIGKILL) and started again: the run is failed
   INTERRUPTED at once and an app with max_active_runs: 1 runs again at once.
9. Bad input: lone surrogates, NUL characters and integers past 64 bits are 422
   naming the field, nothing is stored, and `appforge backup` still works.

Throughout each, `/api/health` answers 200. The model is a fake
OpenAI-compatible server on 127.0.0.1 (the network edge); the rest is real.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fake_model import FakeModel, serve_model
from health_watch import health_throughout
from server_process import ServerProcess

from appforge.cli import main

TOKEN = "af_attacks_admin_token_0123456789"
YAML = {"Content-Type": "application/yaml"}
HUGE = str(2**70)
CHAT = """\
version: 1
name: Chat {n}
type: chat
{limits}
input:
  q: {{type: string, required: true}}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{{{ input.q }}}}"
    history: 4
output:
  answer: "{{{{ answer.text }}}}"
"""
LONG = " ".join(f"word{n}" for n in range(400))


def chat_app(n: int = 0, limits: str = "") -> str:
    return CHAT.format(n=n, limits=limits)


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModel]:
    with serve_model(FakeModel(default="A short answer.", replies={"slowly": LONG})) as m:
        yield m


@pytest.fixture
def env(model: FakeModel, backend: str | None, tmp_path: Path) -> dict[str, str]:
    values = {
        "APPFORGE_HOME": str(tmp_path / "home"),
        "APPFORGE_ADMIN_TOKEN": TOKEN,
        "APPFORGE_OPENAI__BASE_URL": model.url,
        "APPFORGE_OPENAI__API_KEY": "fake",
        "APPFORGE_MODELS": json.dumps({"default": "openai:fake"}),
        "APPFORGE_RATE_LIMIT__ENABLED": "false",
    }
    if backend is not None:
        values["APPFORGE_DATABASE_URL"] = backend
    return values


def client(server: ServerProcess) -> httpx.Client:
    headers = {"Authorization": f"Token {TOKEN}"}
    return httpx.Client(base_url=server.base, headers=headers, timeout=120)


def all_at_once(count: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """``call(i)`` from ``count`` threads released together."""
    barrier = threading.Barrier(count)
    results: list[httpx.Response | None] = [None] * count

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


# --- 7. concurrent writes ------------------------------------------------------------


def test_attack_concurrent_patches_get_a_version_or_409(start_server: Any, env: dict[str, str]):
    server = start_server(env)
    with client(server) as api, health_throughout(server.base):
        uuid = api.post("/api/apps", content=chat_app(), headers=YAML).json()["uuid"]

        def patch(i: int) -> httpx.Response:
            with client(server) as own:
                return own.patch(f"/api/apps/{uuid}", content=chat_app(i + 1), headers=YAML)

        answers = all_at_once(20, patch)
        statuses = sorted({r.status_code for r in answers})
        assert set(statuses) <= {200, 409}, [r.text for r in answers if r.status_code >= 500]
        conflicts = [r.json()["error"]["code"] for r in answers if r.status_code == 409]
        assert set(conflicts) <= {"APP_VERSION_CONFLICT"}
        saved = sorted(r.json()["version"] for r in answers if r.status_code == 200)
        assert saved, "no save succeeded"
        assert len(set(saved)) == len(saved)  # each save got its own version
        versions = api.get(f"/api/apps/{uuid}/versions").json()
        assert sorted(v["version"] for v in versions) == [1, *saved]
        current = api.get(f"/api/apps/{uuid}").json()
        assert current["version"] == max(saved)


def test_attack_concurrent_first_runs_of_one_session_never_stay_running(
    start_server: Any, env: dict[str, str], model: FakeModel
):
    server = start_server(env)
    with client(server) as api, health_throughout(server.base):
        uuid = api.post("/api/apps", content=chat_app(), headers=YAML).json()["uuid"]
        calls_before = len(model.requests)

        def run(i: int) -> httpx.Response:
            with client(server) as own:
                body = {"input": {"q": f"question {i}"}}
                return own.post(f"/api/apps/{uuid}/run/fresh-session", json=body)

        answers = all_at_once(20, run)
        ok = [r for r in answers if r.status_code == 200]
        busy = [r for r in answers if r.status_code == 409]
        assert len(ok) + len(busy) == 20, [
            r.text for r in answers if r.status_code not in (200, 409)
        ]
        assert ok, "no run succeeded"
        for r in busy:
            assert r.json()["error"]["code"] == "SESSION_BUSY"
            assert r.headers["retry-after"] == "1"
        assert len(model.requests) - calls_before == len(ok)  # refused before the model
        runs = api.get(f"/api/apps/{uuid}/runs", params={"limit": 100}).json()
        assert sorted(r["status"] for r in runs) == ["succeeded"] * len(ok)
        turns = api.get("/api/sessions/fresh-session").json()["turns"]
        assert [t["n"] for t in turns] == list(range(1, len(ok) + 1))
        # Once the session is free, the next run goes through.
        again = api.post(f"/api/apps/{uuid}/run/fresh-session", json={"input": {"q": "more"}})
        assert again.status_code == 200, again.text


# --- 8. crash recovery ---------------------------------------------------------------------


def test_attack_kill_mid_run_then_restart_fails_run_interrupted_at_once(
    start_server: Any, env: dict[str, str]
):
    first = start_server(env)
    with client(first) as api:
        limits = "limits: {max_active_runs: 1}"
        uuid = api.post("/api/apps", content=chat_app(limits=limits), headers=YAML).json()["uuid"]
        body = {"input": {"q": "answer slowly"}, "stream": True}
        with api.stream("POST", f"/api/apps/{uuid}/run", json=body) as r:
            run_id = r.headers["x-run-id"]
            # Kept: a dropped line iterator closes the connection, and the run with it.
            lines = r.iter_lines()
            assert "answer" in json.loads(next(lines))["output"]
            busy = api.post(f"/api/apps/{uuid}/run", json={"input": {"q": "hi"}})
            assert busy.status_code == 429  # the running run holds the only place
            first.kill()
    second = start_server(env)
    with client(second) as api, health_throughout(second.base):
        run = api.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "failed"
        assert run["error"]["code"] == "INTERRUPTED"
        assert run["finished_at"] is not None
        again = api.post(f"/api/apps/{uuid}/run", json={"input": {"q": "hi"}})
        assert again.status_code == 200, again.text
        assert again.json()["output"]["answer"] == "A short answer."


# --- 9. bad input ------------------------------------------------------------------------


def test_attack_unstorable_input_is_422_and_backup_still_works(
    start_server: Any, env: dict[str, str], backend: str | None, tmp_path: Path
):
    server = start_server(env)
    json_body = {"Content-Type": "application/json"}
    with client(server) as api, health_throughout(server.base):
        public = chat_app().replace("type: chat", "type: chat\npublic: true")
        uuid = api.post("/api/apps", content=public, headers=YAML).json()["uuid"]
        for raw in ('{"input": {"q": "\\ud800"}}', '{"input": {"q": "a\\u0000b"}}'):
            anonymous = httpx.post(
                f"{server.base}/api/apps/{uuid}/run", content=raw, headers=json_body, timeout=60
            )
            assert anonymous.status_code == 422, anonymous.text
            assert "body.input.q" in anonymous.json()["error"]["message"]
        assert api.get(f"/api/apps/{uuid}/runs").headers["x-total-count"] == "0"
        for path, field in [
            (f"/api/apps?offset={HUGE}", "query.offset"),
            (f"/api/apps/{uuid}/runs?offset={HUGE}", "query.offset"),
            (f"/api/v1/use-cases?skip={HUGE}", "query.skip"),
            (f"/api/apps/{uuid}/versions/{HUGE}", "path.version"),
            ("/api/runs/a%00b", "path.run_id"),
        ]:
            r = api.get(path)
            assert r.status_code == 422, (path, r.text)
            assert field in r.json()["error"]["message"]
        nul_yaml = chat_app(7).replace("name: Chat 7", "name: Chat\x00 7")
        r = api.post("/api/apps", content=nul_yaml.encode(), headers=YAML)
        assert r.status_code == 422 and r.json()["error"]["code"] == "YAML_INVALID", r.text
        assert api.get("/api/apps").headers["x-total-count"] == "1"
    target = tmp_path / "backup.json"
    # The command's main in this process, on the server's environment (a child process
    # would only add its start-up).
    done = CliRunner(env=env).invoke(main, ["backup", "--json_path", str(target)])
    assert done.exit_code == 0, (done.stderr, done.exc_info)
    assert [a["uuid"] for a in json.loads(target.read_bytes())["tables"]["apps"]] == [uuid]
