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
from waiting import poll_until

from tests.datasources.support import make_padded_pdf

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
    # The token is checked first: the page's own fields show once it is accepted.
    page.get_by_label("Search apps").wait_for()

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
    # Only the list changed: the template's comments are all kept.
    assert "[help-center]" not in yaml_text and "# names or uuids of datasources" in yaml_text
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


MANUAL = [
    "Pump manual. Prime the pump with water before its first use, or the seal burns out.",
    "Clean the intake filter every month; a clogged filter halves the flow.",
    "Winter storage: drain the pump and keep it above freezing.",
]


def _session_cookie(page: Page) -> dict[str, object] | None:
    found = [c for c in page.context.cookies() if str(c["name"]).startswith("appforge_builder_")]
    return dict(found[0]) if found else None


def test_sign_in_lasts_across_reloads_and_tabs_and_a_20_mb_pdf_is_ingested(
    served: Served, page: Page, tmp_path: Path
):
    manual = tmp_path / "pump-manual.pdf"
    manual.write_bytes(make_padded_pdf(MANUAL, 20 * 1024 * 1024 + 20_000))
    assert manual.stat().st_size > 20 * 1024 * 1024

    # A wrong token is refused with a message, and the form stays.
    page.goto(served.ui)
    page.get_by_label("API token").fill("af_not_the_token")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Sign-in refused: TOKEN_INVALID").wait_for()
    assert page.get_by_label("API token").is_visible()
    # The right one: signed in, and the API set the http-only session cookie.
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Search apps").wait_for()
    cookie = poll_until(lambda: _session_cookie(page), timeout=60)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert str(cookie["value"]).startswith("afb_") and cookie["domain"] == "127.0.0.1"
    assert TOKEN not in page.url and TOKEN not in str(cookie["value"])

    # A reload, and a new tab, are still signed in.
    page.reload()
    page.get_by_label("Search apps").wait_for()
    assert not page.get_by_label("API token").count()
    tab = page.context.new_page()
    tab.goto(served.ui)
    tab.get_by_label("Search apps").wait_for()
    assert not tab.get_by_label("API token").count()
    tab.close()

    # A 20 MB PDF through the builder's uploader: streamed to the API and ingested.
    _open(page, "Datasources")
    page.get_by_label("Name", exact=True).fill("manuals")
    page.get_by_role("button", name="Create", exact=True).click()
    page.get_by_text("Created datasource manuals").wait_for()
    page.get_by_text("Or files (up to 50 MB each)").wait_for()
    page.locator('input[type="file"]').set_input_files(str(manual))
    # The browser sends the file to the builder first: add once it is there.
    page.get_by_test_id("stFileChipName").get_by_text("pump-manual.pdf").wait_for()
    page.get_by_test_id("stFileChipIconSpinner").wait_for(state="detached")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("Added 1 entry").wait_for()
    page.get_by_text("1 of 1 entries processed").wait_for()
    with _api(served) as api:
        [source] = api.get("/api/datasources").json()
        [entry] = api.get(f"/api/datasources/{source['uuid']}/entries").json()
        found = api.post(
            f"/api/datasources/{source['uuid']}/search", json={"query": "prime the pump"}
        ).json()["results"]
    assert entry["name"] == "pump-manual.pdf" and entry["status"] == "ready", entry
    assert entry["size_bytes"] == manual.stat().st_size and entry["chunks_total"] >= 1
    assert "Prime the pump with water" in found[0]["text"]

    # Sign-out ends it: a reload asks to sign in again.
    _open(page, "Settings")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API token").wait_for()
    poll_until(lambda: _session_cookie(page) is None, timeout=60)
    page.reload()
    page.get_by_label("API token").wait_for()
