"""Issue 15 items 2-4 replayed against a real `appforge serve` process.

Templates that would build 100 MB strings or 19-million-bit numbers, loops of
10**10 iterations, prompt schemas that point at URLs and files, and a
catastrophic regex: each is refused or stopped with a clear code, nothing big
is stored, the only run worker is free afterwards, and `/api/health` answers
200 all along (polled from a thread while the attacks run).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_model import FakeModel, serve_model
from health_watch import health_throughout
from server_process import ServerProcess

TOKEN = "attack-admin-token"
YAML = {"Content-Type": "application/yaml"}
NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

APP = """\
version: 1
name: {name}
public: true
limits: {{timeout_seconds: {timeout}}}
input:
  q: {{type: string, default: hi}}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{user}"
    params: {{max_tokens: 5}}
output:
  answer: "{{{{ answer.text }}}}"
"""


class _SchemaHost(http.server.BaseHTTPRequestHandler):
    """Where a remote `$ref` points: counts the fetches (there must be none)."""

    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).hits += 1
        time.sleep(2)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"type": "string"}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def schema_host() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SchemaHost)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _SchemaHost.hits = 0
    yield f"http://127.0.0.1:{server.server_address[1]}/schema.json"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (each test makes apps and prompts of its own names),
    used normally once before any attack: what a server does once (imports, caches)
    is not the attack."""
    with serve_model(FakeModel(default="fine", pause=0)) as model:
        process = ServerProcess(
            {
                "APPFORGE_HOME": str(tmp_path_factory.mktemp("templates") / "home"),
                "APPFORGE_ADMIN_TOKEN": TOKEN,
                "APPFORGE_OPENAI__BASE_URL": model.url,
                "APPFORGE_OPENAI__API_KEY": "fake",
                "APPFORGE_MODELS": json.dumps({"default": "openai:fake"}),
                "APPFORGE_RUNS__WORKERS": "1",
                "APPFORGE_LIMITS__RENDER_TIMEOUT_SECONDS": "1",
            }
        )
        try:
            with _client(process) as api:
                _warm_up(api)
            yield process
        finally:
            process.stop()


def _client(server: ServerProcess) -> httpx.Client:
    headers = {"Authorization": f"Token {TOKEN}"}
    return httpx.Client(base_url=server.base, headers=headers, timeout=120)


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with _client(server) as client:
        yield client


def _app(api: httpx.Client, name: str, user: str, timeout: float = 60) -> str:
    r = api.post(
        "/api/apps", content=APP.format(name=name, user=user, timeout=timeout), headers=YAML
    )
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _failed(api: httpx.Client, uuid: str, status: int, code: str) -> dict[str, Any]:
    r = api.post(f"/api/apps/{uuid}/run", json={})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    run: dict[str, Any] = api.get(f"/api/runs/{r.json()['error']['details']['run_id']}").json()
    assert run["error"]["code"] == code
    assert len(json.dumps(run)) < 100_000  # never a 100 MB row
    return run


def _warm_up(api: httpx.Client) -> None:
    """Ordinary use: a prompt's schema and render, an app's run."""
    pid = _prompt(api, "warm-up")
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^a"}}}
    body = {"type": "text", "template_text": "{{ name }}", "variables_schema": schema}
    assert api.post(f"/api/v1/prompts/{pid}/versions", json=body).status_code == 201
    r = api.post(f"/api/v1/prompts/{pid}/render", json={"variables": {"name": "ab"}})
    assert r.status_code == 200, r.text
    r = api.post(f"/api/apps/{_app(api, 'warm-up', '{{ input.q }}')}/run", json={})
    assert r.status_code == 200, r.text


def test_attack_templates_are_bounded_in_size_and_time(server: ServerProcess, api: httpx.Client):
    with health_throughout(server.base):
        for n, bomb in enumerate(
            [
                "x{{ 'a' * 10**8 }}",
                "{{ (9 ** (9 ** 7)) > 1 }}",
                "{{ [0] * 10**9 }}",
                "{{ '%999999999s' % 1 }}",
                "{{ '{:>999999999}'.format(1) }}",
            ]
        ):
            run = _failed(api, _app(api, f"bomb{n}", bomb), 422, "TEMPLATE_TOO_LARGE")
            assert run["status"] == "failed"
        r = api.post(
            "/api/apps",
            content=APP.format(name="l", user="{{ lipsum(9) }}", timeout=9),
            headers=YAML,
        )
        assert r.status_code == 422  # lipsum is no more: an unknown name at save
        # The run's timeout ends 10**10 loop iterations and frees the only worker.
        slow = _app(api, "slow", NESTED, timeout=2)
        assert _failed(api, slow, 504, "RUN_TIMEOUT")["status"] == "timeout"
        r = api.post(f"/api/apps/{_app(api, 'fine', '{{ input.q }}')}/run", json={})
        assert r.status_code == 200 and r.json()["output"]["answer"] == "fine"


def _prompt(api: httpx.Client, name: str = "attacks") -> str:
    uc = api.post("/api/v1/use-cases", json={"name": name}).json()["id"]
    r = api.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "victim"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_attack_prompt_schemas_never_fetch_read_files_or_backtrack(
    server: ServerProcess, api: httpx.Client, schema_host: str, tmp_path: Path
):
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "string", "description": "PRIVATE-FILE-CONTENT"}')
    pid = _prompt(api)
    versions = f"/api/v1/prompts/{pid}/versions"
    with health_throughout(server.base):
        for ref in (schema_host, secret.as_uri()):
            schema = {"type": "object", "properties": {"name": {"$ref": ref}}}
            body = {"type": "text", "template_text": "{{ name }}", "variables_schema": schema}
            r = api.post(versions, json=body)
            assert r.status_code == 422 and r.json()["error"]["code"] == "SCHEMA_INVALID"
            assert ref in r.json()["error"]["message"]
            assert "PRIVATE-FILE-CONTENT" not in r.text
        assert api.get(versions).json() == []
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}},
        }
        body = {"type": "text", "template_text": "{{ name }}", "variables_schema": schema}
        assert api.post(versions, json=body).status_code == 201
        r = api.post(f"/api/v1/prompts/{pid}/render", json={"variables": {"name": "a" * 26 + "!"}})
        assert r.status_code == 422 and r.json()["error"]["code"] == "VARIABLES_INVALID"
        body = {"type": "text", "template_text": NESTED + "{{ name }}"}
        assert api.post(versions, json=body).status_code == 201
        r = api.post(f"/api/v1/prompts/{pid}/render", json={"variables": {"name": "x"}})
        assert r.status_code == 422 and r.json()["error"]["code"] == "RENDER_TIMEOUT"
    assert _SchemaHost.hits == 0
