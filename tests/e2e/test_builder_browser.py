"""The builder in a real browser, used as a new user would.

`appforge serve` runs on free loopback ports (API and builder); headless
Chromium (Debian's package, driven by Playwright) signs in, creates a
datasource, uploads a text file with metadata, waits until it is ready, creates
a chat app from the support-bot template with the form editor (pointing its
retrieve step at that datasource with the picker), and chats with
it in the playground, seeing the answer arrive in pieces and cite the file.

A screenshot of each page goes to the test's output folder; with
``APPFORGE_SCREENSHOTS=<dir>`` they are also written there (that is how the
README's pictures in ``docs/screenshots`` are made).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, sync_playwright
from ports import free_port, wait_ok

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TOKEN = "af_browser_admin_token_0123456789"
TIMEOUT_MS = 90_000
QUESTION = "Explain in detail how to reset the widget, step by step."
# Records each text the newest answer shows, on every change of the page.
RECORD_ANSWER = """() => {
  window.answerStates = [];
  new MutationObserver(() => {
    const messages = document.querySelectorAll('[data-testid="stChatMessage"]');
    if (messages.length < 2) return;
    const text = messages[1].querySelector('[data-testid="stMarkdownContainer"]');
    if (text) window.answerStates.push(text.innerText);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
ARTICLE = (
    "To reset the widget, hold the power button for ten seconds until the light "
    "blinks green. Then release the button and wait for the widget to restart.\n"
)


@dataclass
class Served:
    api: str
    ui: str


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`appforge serve` with the builder, on a fresh home."""
    api_port, ui_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "APPFORGE_HOME": str(tmp_path / "home"), "APPFORGE_ADMIN_TOKEN": TOKEN}
    env.pop("APPFORGE_TOKEN", None)
    exe = Path(sys.executable).parent / "appforge"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(api_port),
             "--ui-port", str(ui_port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            served = Served(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}")
            wait_ok(f"{served.api}/api/health", process, log)
            wait_ok(f"{served.ui}/_stcore/health", process, log)
            yield served
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1100})
            context.set_default_timeout(TIMEOUT_MS)
            opened = context.new_page()
            yield opened
            # What the browser showed last, to see why a step failed.
            opened.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
        finally:
            browser.close()


class Shots:
    """Screenshots into the test's folder, and ``APPFORGE_SCREENSHOTS`` when set."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir()
        extra = os.environ.get("APPFORGE_SCREENSHOTS")
        self.extra = Path(extra) if extra else None

    def take(self, page: Page, name: str) -> Path:
        _settle(page)
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path))
        assert path.stat().st_size > 10_000  # a rendered page, not a blank one
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)
        return path


def _settle(page: Page) -> None:
    """Wait until Streamlit has finished running the page's script."""
    page.wait_for_timeout(250)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for()


def _open(page: Page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, exact=True).wait_for()
    _settle(page)


def _type(field: Locator, text: str) -> None:
    """Fill a Streamlit text field and leave it, which sends its value."""
    field.fill(text)
    field.press("Tab")
    _settle(field.page)


def _choose(page: Page, label: str, option: str) -> None:
    """Pick an option of a Streamlit select box by its visible label."""
    box = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.get_by_text(label, exact=True)
    )
    box.locator("input").fill(option)
    box.locator("input").press("Enter")
    _settle(page)


def _api(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.api, headers={"Authorization": f"Token {TOKEN}"})


def test_new_user_builds_a_chat_app_over_a_file_and_chats_with_it(
    served: Served, page: Page, tmp_path: Path
):
    shots = Shots(tmp_path / "screenshots")
    article = tmp_path / "widget-reset.txt"
    article.write_text(ARTICLE)

    # Sign in: the builder never gets the server's admin token by itself.
    page.goto(served.ui)
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Apps", exact=True).wait_for()

    # A datasource, and a text file with metadata uploaded into it.
    _open(page, "Datasources")
    page.get_by_label("Name", exact=True).fill("widget-docs")
    page.get_by_role("button", name="Create", exact=True).click()
    page.get_by_text("Created datasource widget-docs").wait_for()
    page.locator('input[type="file"]').set_input_files(str(article))
    _type(page.get_by_label("Metadata key 1"), "product")
    _type(page.get_by_label("Metadata value 1"), "widget")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("Added 1 entry").wait_for()
    # The entries table refreshes itself until the entry is processed.
    page.get_by_text("1 of 1 entries processed").wait_for()
    with _api(served) as api:
        [source] = api.get("/api/datasources").json()
        [entry] = api.get(f"/api/datasources/{source['uuid']}/entries").json()
    assert entry["name"] == "widget-reset.txt" and entry["status"] == "ready"
    assert entry["entry_metadata"] == {"product": "widget"}
    shots.take(page, "datasources")

    # A chat app from the support-bot template, named and pointed at the
    # datasource with the form editor.
    _open(page, "Apps")
    _choose(page, "Template", "support-bot")
    _type(page.get_by_label("App name"), "Widget helper")
    page.get_by_role("button", name="Remove help-center").click()
    _settle(page)
    picker = page.get_by_role("combobox", name="Datasources (step 1)")
    picker.fill("widget-docs")
    picker.press("Enter")
    picker.press("Escape")  # close the picker's list
    _settle(page)
    yaml_text = page.get_by_label("App YAML").input_value()
    assert "name: Widget helper" in yaml_text and "widget-docs" in yaml_text
    assert "help-center" not in yaml_text
    page.get_by_role("button", name="Validate and create").click()
    page.get_by_text("Created Widget helper").wait_for()
    # The editor: the form beside the YAML it writes.
    page.get_by_role("heading", name="Form", exact=True).evaluate(
        "e => e.scrollIntoView({block: 'start'})"
    )
    shots.take(page, "app-editor")
    with _api(served) as api:
        [app] = api.get("/api/apps").json()
        definition = api.get(f"/api/apps/{app['uuid']}").json()["definition"]
    assert app["name"] == "Widget helper" and app["type"] == "chat"
    assert definition["steps"][0]["datasources"] == ["widget-docs"]

    # The playground: the answer arrives in pieces, then its source. Every
    # change of the answer's text in the page is recorded as it happens.
    _open(page, "Playground")
    _type(page.get_by_role("textbox", name="question *", exact=True), QUESTION)
    _type(page.get_by_role("textbox", name="product", exact=True), "widget")
    page.evaluate(RECORD_ANSWER)
    page.get_by_role("button", name="Send").click()
    answer = page.locator('[data-testid="stChatMessage"]').nth(1)
    answer.get_by_test_id("stExpander").get_by_text("Sources").click()
    answer.get_by_text("widget-reset.txt").wait_for()
    final = answer.locator('[data-testid="stMarkdownContainer"]').first.inner_text().strip()
    states = [s.strip() for s in page.evaluate("window.answerStates") if s.strip()]
    growing = [s for s in dict.fromkeys(states) if s != final and final.startswith(s)]
    assert final and len(growing) >= 3, f"the answer did not arrive in pieces: {states}"
    shots.take(page, "playground")
    with _api(served) as api:
        [run] = api.get(f"/api/apps/{app['uuid']}/runs").json()
    assert run["status"] == "succeeded" and run["stream"] is True
    assert run["output"]["sources"] == ["widget-reset.txt"]
    assert run["output"]["answer"].strip()[:20] in final

    # The other pages open without an error.
    for title in ("Runs", "Prompts", "Settings"):
        _open(page, title)
        assert not page.locator('[data-testid="stException"]').count()
        shots.take(page, title.lower())
    assert sorted(p.name for p in shots.folder.iterdir()) == [
        "app-editor.png",
        "datasources.png",
        "playground.png",
        "prompts.png",
        "runs.png",
        "settings.png",
    ]


ECHO_APP = """version: 1
name: Echo
type: text
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    model: default
    prompt:
      user: "{{ input.question }}"
    params: {temperature: 0, seed: 1, max_tokens: 8}
output:
  answer: "{{ answer.text }}"
"""


def _pick(page: Page, label: str, option: str) -> None:
    """Pick an option of a select box: open it, filter, and click the option itself."""
    box = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.get_by_text(label, exact=True)
    )
    box.locator("input").click()
    box.locator("input").fill(option)
    page.get_by_role("option", name=option, exact=True).click()
    _settle(page)
    assert box.locator("input").input_value() == option


def test_admin_points_default_at_a_real_server_and_runs_an_app_with_it(
    served: Served, page: Page, tmp_path: Path, llama_server: str
):
    shots = Shots(tmp_path / "screenshots")
    with _api(served) as api:
        made = api.post("/api/apps", content=ECHO_APP, headers={"Content-Type": "application/yaml"})
        assert made.status_code == 201, made.text
    page.goto(served.ui)
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Apps", exact=True).wait_for()

    # Settings, Models: the bundled model is labelled; add the real server as a provider.
    _open(page, "Settings")
    page.get_by_text("Ollama, vLLM, llama.cpp server, OpenAI").wait_for()
    _settle(page)
    target = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.get_by_text("Points at", exact=True)
    )
    shown = target.locator("input").input_value()
    assert (
        shown == "local:smollm2 — tiny offline demo model (SmolLM2-135M): answers are often wrong"
    )
    page.get_by_label("Provider name (e.g. ollama)").fill("llama")
    page.get_by_label("Base URL (e.g. http://127.0.0.1:11434/v1)").fill(llama_server)
    page.get_by_role("button", name="Add provider").click()
    page.get_by_text("Added provider llama").wait_for()
    _settle(page)

    # Test the connection: the server lists its model, which then can be picked.
    _pick(page, "Provider", "llama")
    page.get_by_role("button", name="Test connection").click()
    page.get_by_text("llama answered").wait_for()
    assert "smollm2" in page.get_by_text("llama answered").inner_text()
    _settle(page)
    _pick(page, "Points at", "llama:smollm2")
    page.get_by_role("button", name="Set alias").click()
    page.get_by_text("Alias default now points at llama:smollm2").wait_for()
    shots.take(page, "models")
    with _api(served) as api:
        [alias] = api.get("/api/models/aliases").json()
    assert (alias["name"], alias["target"], alias["source"]) == (
        "default",
        "llama:smollm2",
        "database",
    )

    # The app's "default" now goes to that server, without a restart.
    _open(page, "Playground")
    _type(page.get_by_role("textbox", name="question *", exact=True), "Say hello.")
    page.get_by_role("button", name="Send").click()
    page.get_by_text("succeeded").first.wait_for()
    with _api(served) as api:
        [run] = api.get(f"/api/apps/{made.json()['uuid']}/runs").json()
        record = api.get(f"/api/runs/{run['id']}").json()
    assert record["status"] == "succeeded" and record["output"]["answer"].strip()
    assert record["steps"][0]["usage_reported"] is False  # llama_cpp.server's answer
