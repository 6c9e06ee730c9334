"""CORS in a real browser: a page on another origin runs a public app, a third cannot.

`appforge serve` runs on a free loopback port with its model behind a fake
OpenAI-compatible server (the network edge); two tiny static servers on two
more loopback ports serve the same page, so the page has two origins. The app's
YAML lists only the first. Headless Chromium (Debian's, driven by Playwright)
opens the page on each origin and runs the app with ``fetch()``, reading the
streamed NDJSON as it comes; the browser itself enforces CORS.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_model import FakeModel, serve_model
from playwright.sync_api import Browser, sync_playwright
from server_process import ServerProcess

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TOKEN = "af_cors_browser_admin_token_01234"
ANSWER = "Hello from the other origin, word by word."
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title></head><body>
<script>
// Runs an app with fetch() and reads the NDJSON stream chunk by chunk.
window.runApp = async ([base, uuid]) => {
  try {
    const response = await fetch(`${base}/api/apps/${uuid}/run`, {
      method: "POST",
      headers: {"Content-Type": "application/json", "Accept": "application/x-ndjson"},
      body: JSON.stringify({input: {message: "Hi"}, stream: true}),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "", reads = 0;
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      reads += 1;
      text += decoder.decode(value, {stream: true});
    }
    return {status: response.status, session: response.headers.get("X-Session-ID"),
            run: response.headers.get("X-Run-ID"), reads,
            lines: text.split("\\n").filter((l) => l).map((l) => JSON.parse(l))};
  } catch (error) {
    return {error: String(error)};
  }
};
</script></body></html>
"""
APP = """\
version: 1
name: Shop helper
type: chat
public: true
origins: ["{origin}"]
input:
  message: {{type: string, required: true}}
steps:
  - id: reply
    kind: llm
    prompt:
      user: "{{{{ input.message }}}}"
output:
  reply: "{{{{ reply.text }}}}"
"""


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModel]:
    with serve_model(FakeModel(default=ANSWER, pause=0.01)) as served:
        yield served


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Serve the page on a new loopback port per call; returns its origin."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "index.html").write_text(PAGE)
    servers: list[ThreadingHTTPServer] = []

    def start() -> str:
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def _run_from(browser: Browser, origin: str, base: str, uuid: str) -> dict[str, Any]:
    context = browser.new_context()
    context.set_default_timeout(120_000)
    try:
        page = context.new_page()
        page.goto(f"{origin}/index.html")
        result: dict[str, Any] = page.evaluate("args => window.runApp(args)", [base, uuid])
        return result
    finally:
        context.close()


def test_cors_browser_allowed_origin_reads_stream_third_origin_blocked(
    start_server: Callable[[dict[str, str]], ServerProcess],
    model: FakeModel,
    site: Callable[[], str],
    browser: Browser,
    tmp_path: Path,
):
    server = start_server(
        {
            "APPFORGE_HOME": str(tmp_path / "home"),
            "APPFORGE_ADMIN_TOKEN": TOKEN,
            "APPFORGE_OPENAI__BASE_URL": model.url,
            "APPFORGE_OPENAI__API_KEY": "fake",
            "APPFORGE_MODELS": '{"default": "openai:fake"}',
        }
    )
    allowed, other = site(), site()
    api = httpx.Client(base_url=server.base, headers={"Authorization": f"Token {TOKEN}"})
    with api:
        r = api.post(
            "/api/apps",
            content=APP.format(origin=allowed),
            headers={"Content-Type": "application/yaml"},
        )
        assert r.status_code == 201, r.text
        uuid = r.json()["uuid"]

        ok = _run_from(browser, allowed, server.base, uuid)
        assert "error" not in ok, ok
        assert ok["status"] == 200
        lines = ok["lines"]
        assert lines[-1]["done"] is True and lines[-1]["run"]["status"] == "succeeded"
        chunks = [line["output"]["reply"] for line in lines[:-1]]
        assert len(chunks) > 1  # it came as a stream, not one body
        assert "".join(chunks) == ANSWER
        # Exposed headers are readable from the page.
        assert ok["session"] == lines[-1]["session"]["id"]
        assert ok["run"] == lines[-1]["run"]["id"]

        blocked = _run_from(browser, other, server.base, uuid)
        assert "TypeError" in blocked.get("error", ""), blocked
        # The preflight stopped the browser before it sent the run.
        runs = api.get(f"/api/apps/{uuid}/runs").json()
        assert [run["id"] for run in runs] == [ok["run"]]
