"""Apps published to end users, in a real browser: the chat page and the widget.

`appforge serve` runs on a free loopback port with its model behind a slow fake
OpenAI-compatible server (so an answer takes long enough to be watched and
stopped); retrieval, runs, sessions and storage are the real ones. Headless
Chromium (Debian's, driven by Playwright) opens the pages as an end user would.
With ``APPFORGE_SCREENSHOTS=<dir>`` the README's pictures are written there.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fake_model import FakeModel, serve_model
from playwright.sync_api import Browser, Page, expect, sync_playwright
from ports import free_port, wait_ok
from waiting import poll_until

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TOKEN = "af_chat_browser_admin_token_0123"
TIMEOUT_MS = 120_000
ARTICLE = "To reset the widget, hold the power button for ten seconds until the light blinks."
ANSWER = (
    "Hold the **power button** for ten seconds [1]. The light blinks green when the widget "
    "is reset, and then it restarts on its own."
)
LONG = " ".join(f"Step {n} of the long explanation." for n in range(1, 400))
PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> **safe**'
# Records each text the newest answer shows, on every change of the page.
RECORD = """() => {
  window.states = [];
  new MutationObserver(() => {
    const answers = document.querySelectorAll('.message.assistant .text');
    if (answers.length) window.states.push(answers[answers.length - 1].innerText);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModel]:
    fake = FakeModel(default=ANSWER, replies={"at length": LONG, "payload": PAYLOAD})
    with serve_model(fake) as served:
        yield served


@pytest.fixture(scope="module")
def server(model: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("chat")
    port, log = free_port(), folder / "serve.log"
    env = {
        **os.environ,
        "APPFORGE_HOME": str(folder / "home"),
        "APPFORGE_ADMIN_TOKEN": TOKEN,
        "APPFORGE_OPENAI__BASE_URL": model.url,
        "APPFORGE_OPENAI__API_KEY": "fake",
        "APPFORGE_MODELS": json.dumps({"default": "openai:fake"}),
    }
    exe = Path(sys.executable).parent / "appforge"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_ok(f"http://127.0.0.1:{port}/api/health", process, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def api(server: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Token {TOKEN}"}
    with httpx.Client(base_url=server, headers=headers, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    try:
        yield opened
    finally:
        opened.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
        context.close()


def _shot(page: Page, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 5_000
    extra = os.environ.get("APPFORGE_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


def _support_bot(api: httpx.Client) -> str:
    """The support-bot example over a help-center datasource with one article."""
    ds = api.post("/api/datasources", json={"name": "help-center", "type": "mixed"}).json()
    entry = {"entry_data": {"name": "widget-manual.txt", "content": ARTICLE}}
    assert api.post(f"/api/datasources/{ds['uuid']}/entries", json=entry).status_code == 201

    def ready() -> bool:
        entries = api.get(f"/api/datasources/{ds['uuid']}/entries").json()
        return all(e["status"] == "ready" for e in entries)

    poll_until(ready, interval=0.3)
    text = (ROOT / "apps_yaml" / "examples" / "support-bot.yaml").read_text()
    created = api.post("/api/apps", content=text, headers={"Content-Type": "application/yaml"})
    assert created.status_code == 201, created.text
    return str(created.json()["uuid"])


def _answers(page: Page) -> list[str]:
    return [t.inner_text() for t in page.locator(".message.assistant .text").all()]


def test_chat_page_streams_cites_stops_and_keeps_the_session(
    server: str, api: httpx.Client, page: Page, tmp_path: Path
):
    uuid = _support_bot(api)
    key = api.post("/api/tokens", json={"name": "page", "role": "runner", "apps": [uuid]}).json()[
        "token"
    ]
    page.goto(f"{server}/chat/{uuid}#key={key}")
    page.locator("#message").wait_for()
    assert "#key=" not in page.url  # the key left the address bar at once
    assert page.locator("#title").inner_text() == "Support bot"
    page.evaluate(RECORD)

    page.locator("#message").fill("How do I reset the widget?")
    page.keyboard.press("Enter")
    page.locator(".message.assistant:not(.streaming) .sources").wait_for()
    final = _answers(page)[-1]
    assert "power button" in final and "<strong>" not in final
    assert page.locator(".message.assistant strong").first.inner_text() == "power button"
    assert "widget-manual.txt" in page.locator(".sources").inner_text()
    states = [s for s in dict.fromkeys(page.evaluate("window.states")) if s]
    growing = [s for s in states if final.startswith(s.rstrip("▍").strip())]
    assert len(growing) >= 3, states  # the answer grew in pieces as it was written
    _shot(page, "chat-page", tmp_path)

    # A long answer, stopped half-way: the run is stored as cancelled.
    page.locator("#message").fill("Please explain everything at length.")
    page.keyboard.press("Enter")
    poll_until(lambda: len(_answers(page)) == 2 and len(_answers(page)[-1]) > 20)
    page.locator("#stop").click()
    page.locator(".message.assistant.stopped").wait_for()
    stopped = _answers(page)[-1]
    assert 20 < len(stopped) < len(LONG)

    def cancelled() -> bool:
        runs = api.get(f"/api/apps/{uuid}/runs", params={"status": "cancelled"}).json()
        return len(runs) == 1

    poll_until(cancelled)

    # A reload shows the conversation again (the finished turn: a stopped run is no turn).
    page.reload()
    page.locator(".message.user").first.wait_for()
    assert page.locator(".message.user").first.inner_text() == "How do I reset the widget?"
    assert "power button" in _answers(page)[0]

    # Readable on a phone: nothing wider than a 375 px screen.
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 376


def test_widget_on_another_origin_streams_an_answer(
    server: str, api: httpx.Client, page: Page, tmp_path: Path
):
    doc = (
        "name: Widget bot\ntype: chat\npublic: true\ninput:\n  q: {type: string, required: true}\n"
    )
    doc += "ui: {title: Ask us, welcome: 'Hi! How can we help?', accent: '#0f766e'}\n"
    doc += "steps:\n  - {id: a, kind: llm, prompt: {user: '{{ input.q }}'}}\noutput:\n"
    doc += "  a: '{{ a.text }}'\n"
    uuid = api.post("/api/apps", content=doc, headers={"Content-Type": "application/yaml"})
    site = tmp_path / "site"
    site.mkdir()
    # The host page styles everything loudly: none of it may reach the widget.
    (site / "index.html").write_text(
        "<!doctype html><html><head><style>* { font-family: serif !important; "
        "color: red !important; } button { background: lime !important; }</style></head>"
        "<body><p>A shop page.</p>"
        f'<script src="{server}/embed.js" data-app="{uuid.json()["uuid"]}" '
        'data-accent="#0f766e" async></script></body></html>'
    )
    port = free_port()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{port}/index.html")
        bubble = page.locator("button.bubble")
        assert bubble.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(15, 118, 110)"
        bubble.click()
        chat = page.frame_locator("iframe")
        chat.locator("#message").fill("Hello there")
        chat.locator("#message").press("Enter")
        chat.locator(".message.assistant:not(.streaming) >> nth=1").wait_for()
        texts = chat.locator(".message.assistant .text").all_inner_texts()
        assert texts[0] == "Hi! How can we help?" and "power button" in texts[1]
        assert chat.locator("#title").inner_text() == "Ask us"
        page.wait_for_timeout(300)
        _shot(page, "widget", tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_chat_page_shows_html_from_the_model_as_text(server: str, api: httpx.Client, page: Page):
    doc = "name: Echo page\ntype: chat\npublic: true\ninput:\n  q: {type: string, required: true}\n"
    doc += "steps:\n  - {id: a, kind: llm, prompt: {user: '{{ input.q }}'}}\noutput:\n"
    doc += "  a: '{{ a.text }}'\n"
    uuid = api.post("/api/apps", content=doc, headers={"Content-Type": "application/yaml"})
    page.goto(f"{server}/chat/{uuid.json()['uuid']}")
    page.locator("#message").fill("Send the payload")
    page.keyboard.press("Enter")
    page.locator(".message.assistant:not(.streaming)").wait_for()
    answer = page.locator(".message.assistant .text").inner_text()
    assert '<img src=x onerror="window.__xss=1">' in answer and "<script>" in answer
    assert page.locator(".message.assistant img, .message.assistant script").count() == 0
    assert page.locator(".message.assistant strong").inner_text() == "safe"
    assert page.evaluate("window.__xss") is None


def test_text_app_form_from_inputs(server: str, api: httpx.Client, page: Page):
    doc = """\
name: Summary page
type: text
public: true
input:
  text: {type: string, required: true, description: What to summarise}
  style: {type: string, default: short, enum: [short, long]}
  words: {type: integer, default: 20}
  shout: {type: boolean, default: false}
steps:
  - {id: a, kind: llm, prompt: {user: "{{ input.text }}"}}
output:
  summary: "{{ a.text }}"
  settings: "{{ input.style }}/{{ input.words }}/{{ input.shout }}"
"""
    uuid = api.post("/api/apps", content=doc, headers={"Content-Type": "application/yaml"})
    page.goto(f"{server}/chat/{uuid.json()['uuid']}")
    # The page builds its form after it has read the app's inputs: wait for it.
    expect(page.locator("#in-style option")).to_have_text(["short", "long"], timeout=60_000)
    expect(page.locator("#in-words")).to_have_value("20")
    page.locator("#in-text").fill("A long text to summarise.")
    page.locator("#in-style").select_option(label="long")
    page.locator("#in-shout").check()
    page.locator("#inputs button[type=submit]").click()
    page.locator(".output:has-text('settings') .value").wait_for()
    poll_until(lambda: "power button" in page.locator(".output .value").first.inner_text())
    assert page.locator(".output h2").all_text_contents() == ["summary", "settings"]
    assert page.locator(".output .value").nth(1).inner_text() == "long/20/True"


def test_private_app_page_asks_for_a_key(server: str, api: httpx.Client, page: Page):
    doc = "name: Private page\ntype: chat\ninput:\n  q: {type: string, required: true}\n"
    doc += "steps:\n  - {id: a, kind: llm, prompt: {user: '{{ input.q }}'}}\noutput:\n"
    doc += "  a: '{{ a.text }}'\n"
    uuid = api.post("/api/apps", content=doc, headers={"Content-Type": "application/yaml"})
    app = uuid.json()["uuid"]
    key = api.post("/api/tokens", json={"name": "k", "role": "runner", "apps": [app]}).json()
    page.goto(f"{server}/chat/{app}")
    page.locator("#key-form").wait_for()
    assert page.locator("#composer").is_hidden()
    page.locator("#key").fill(key["token"])
    page.locator("#key-form button").click()
    page.locator("#message").wait_for()
    assert page.evaluate(f"sessionStorage.getItem('appforge:key:{app}')") == key["token"]
