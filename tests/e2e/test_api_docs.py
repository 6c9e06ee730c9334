"""The API described for others: offline docs pages, and a generated client.

- ``/docs`` (Swagger UI) and ``/redoc`` render in a real Chromium that may not
  reach anything but the server, with the Authorize button of the document's
  security schemes.
- openapi-python-client generates a client from the live ``/openapi.json``
  without a warning; the generated client creates an app, runs it, continues
  its session and reads it, and reads a streamed run line by line with the
  documented ``RunChunk`` model.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Request, Route, sync_playwright
from server_process import ServerProcess

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TOKEN = "af_api_docs_admin_token_0123456789"
APP = """\
version: 1
name: Generated client echo
type: chat
input:
  message: {type: string, required: true}
steps:
  - id: reply
    kind: llm
    prompt:
      system: Answer in a few words.
      user: "{{ input.message }}"
    history: 4
    params: {temperature: 0, seed: 3, max_tokens: 8}
output:
  reply: "{{ reply.text }}"
  heard: "{{ input.message }}"
"""
# The app document is sent as YAML, and case files as JSONL or CSV: the generator is
# told to treat those media types as raw bytes (its documented way for types it does
# not know).
GENERATOR_CONFIG = (
    "content_type_overrides:\n"
    "  application/yaml: application/octet-stream\n"
    "  application/x-ndjson: application/octet-stream\n"
    "  text/csv: application/octet-stream\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("docs-home")
    started = ServerProcess({"APPFORGE_HOME": str(home), "APPFORGE_ADMIN_TOKEN": TOKEN})
    yield started
    started.stop()


def test_docs_pages_render_offline_with_authorize(server: ServerProcess):
    elsewhere: list[str] = []

    def only_the_server(route: Route, request: Request) -> None:
        if request.url.startswith(server.base):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.goto(f"{server.base}/docs")
            page.locator(".swagger-ui .btn.authorize").wait_for(timeout=60_000)
            page.locator("#operations-runs-runApp").wait_for(timeout=60_000)
            page.locator(".swagger-ui .btn.authorize").click()
            dialog = page.locator(".swagger-ui .dialog-ux")
            dialog.wait_for(timeout=60_000)
            assert "X-API-Key" in dialog.inner_text()
            page.goto(f"{server.base}/redoc")
            page.locator("h2", has_text="Run an app in a new session").wait_for(timeout=60_000)
        finally:
            browser.close()
    assert elsewhere == []


def test_openapi_document_names_operations_and_security(server: ServerProcess):
    spec = httpx.get(f"{server.base}/openapi.json", timeout=30).json()
    ops = {
        op["operationId"]: (method, path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
    }
    assert ops["createApp"] == ("post", "/api/apps")
    assert ops["runApp"] == ("post", "/api/apps/{app_uuid}/run")
    assert ops["runAppInSession"] == ("post", "/api/apps/{app_uuid}/run/{session_id}")
    run = spec["paths"]["/api/apps/{app_uuid}/run"]["post"]
    assert [p["name"] for p in run.get("parameters", [])] == ["app_uuid"]  # no stray query
    in_session = spec["paths"]["/api/apps/{app_uuid}/run/{session_id}"]["post"]
    session_param = next(p for p in in_session["parameters"] if p["name"] == "session_id")
    assert session_param["schema"]["type"] == "string" and session_param["required"]
    streamed = run["responses"]["200"]["content"]
    assert set(streamed) == {"application/json", "application/x-ndjson", "text/event-stream"}
    assert streamed["application/x-ndjson"]["schema"] == {"$ref": "#/components/schemas/RunChunk"}
    assert set(spec["components"]["securitySchemes"]) == {"TokenAuth", "BearerAuth", "ApiKeyAuth"}
    assert {} in run["security"]  # public apps run without a token
    assert {} not in spec["paths"]["/api/apps"]["post"]["security"]


def _generate(server: ServerProcess, out: Path) -> str:
    spec = out / "openapi.json"
    spec.write_text(json.dumps(httpx.get(f"{server.base}/openapi.json", timeout=30).json()))
    config = out / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    exe = Path(sys.executable).parent / "openapi-python-client"
    done = subprocess.run(
        [str(exe), "generate", "--path", str(spec), "--meta", "none", "--config", str(config)]
        + ["--output-path", str(out / "afgen")],
        capture_output=True,
        text=True,
        cwd=out,
        env={"PATH": str(exe.parent)},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_generated_client_creates_runs_and_continues_a_session(
    server: ServerProcess, tmp_path: Path
):
    report = _generate(server, tmp_path)
    assert "warning" not in report.lower(), report
    sys.path.insert(0, str(tmp_path))
    try:
        _use_generated_client(server)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "afgen" or m.startswith("afgen.")]:
            del sys.modules[name]


def _use_generated_client(server: ServerProcess) -> None:
    client_mod: Any = importlib.import_module("afgen.client")
    create_app: Any = importlib.import_module("afgen.api.apps.create_app")
    run_app: Any = importlib.import_module("afgen.api.runs.run_app")
    in_session: Any = importlib.import_module("afgen.api.runs.run_app_in_session")
    get_session: Any = importlib.import_module("afgen.api.sessions.get_session")
    models: Any = importlib.import_module("afgen.models")
    types: Any = importlib.import_module("afgen.types")

    client = client_mod.AuthenticatedClient(base_url=server.base, token=TOKEN, timeout=120)
    with client:
        yaml_file = types.File(payload=io.BytesIO(APP.encode()), mime_type="application/yaml")
        app = create_app.sync(client=client, body=yaml_file)
        assert isinstance(app, models.AppPublic) and app.name == "Generated client echo"
        body = models.RunBody.from_dict({"input": {"message": "hello"}})
        first = run_app.sync(app.uuid, client=client, body=body)
        assert isinstance(first, models.RunResponse), first
        assert first.output["heard"] == "hello"
        session_id = first.session.id
        again = models.RunBody.from_dict({"input": {"message": "and again"}})
        second = in_session.sync(app.uuid, session_id, client=client, body=again)
        assert isinstance(second, models.RunResponse), second
        assert second.session.id == session_id and second.output["heard"] == "and again"
        session = get_session.sync(session_id, client=client)
        assert [t.input_["message"] for t in session.turns] == ["hello", "and again"]
        streamed = {"input": {"message": "stream it"}, "stream": True}
        url = f"/api/apps/{app.uuid}/run/{session_id}"
        with client.get_httpx_client().stream("POST", url, json=streamed) as answer:
            assert answer.headers["content-type"].startswith("application/x-ndjson")
            lines = [models.RunChunk.from_dict(json.loads(x)) for x in answer.iter_lines() if x]
    assert lines[-1].done is True and lines[-1].session["id"] == session_id
    pieces = [c.output.to_dict().get("heard", "") for c in lines[:-1] if c.output]
    assert "".join(pieces) == "stream it"
