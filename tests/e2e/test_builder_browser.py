"""The builder in a real browser, used as a new user would.

`appforge serve` runs on free loopback ports (API and builder); headless
Chromium (Debian's package, driven by Playwright) signs in, creates a
datasource, uploads a text file with metadata, waits until it is ready, creates
a chat app from the support-bot template with the form editor (pointing its
retrieve step at that datasource with the picker), and chats with
it in the playground, seeing the answer arrive in pieces and cite the file.
Another test runs an app through the API (one answer, one failure) and opens
the Analytics page (its totals and four charts) and the Runs page.

A screenshot of each page goes to the test's output folder; with
``APPFORGE_SCREENSHOTS=<dir>`` they are also written there (that is how the
README's pictures in ``docs/screenshots`` are made).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fake_model import FakeModel, serve_model
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from ports import free_port, wait_ok
from waiting import poll_until

from tests.datasources.support import make_padded_pdf

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TOKEN = "af_browser_admin_token_0123456789"
TIMEOUT_MS = 90_000
INGEST_TIMEOUT_MS = 600_000  # only stops a hang
CHOOSE_TRIES = 6  # a select box typed into again after a rerun emptied it
CHOOSE_WAIT_MS = 15_000  # for its list to show the typed option, per try
QUESTION = "Explain in detail how to reset the widget, step by step."
# Records each text the newest answer shows (with how many answers there are), on
# every change of the page.
RECORD_ANSWER = """() => {
  window.answerStates = [];
  new MutationObserver(() => {
    const answers = [...document.querySelectorAll('[data-testid="stChatMessage"]')].filter(
      m => m.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
    if (!answers.length) return;
    const text = answers[answers.length - 1].querySelector('[data-testid="stMarkdownContainer"]');
    if (text) window.answerStates.push([answers.length, text.innerText]);
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


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`appforge serve` with the builder, on a fresh home (one for the module's tests,
    which name what they make)."""
    api_port, ui_port = free_port(), free_port()
    folder = tmp_path_factory.mktemp("served")
    log = folder / "serve.log"
    env = {**os.environ, "APPFORGE_HOME": str(folder / "home"), "APPFORGE_ADMIN_TOKEN": TOKEN}
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module's tests (each gets its own context: no shared cookies).

    Not one per session: between its calls Playwright's sync API leaves its event loop
    marked as running in this thread, which would break later tests' ``asyncio.run``."""
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        opened = context.new_page()
        yield opened
        # What the browser showed last, to see why a step failed.
        opened.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
    finally:
        context.close()


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
    """Pick an option of a Streamlit select box by its visible label: type it, then
    click it once the list shows it (Enter pressed before the list has filtered picks
    nothing, and a rerun that lands while the text is typed empties the field: then
    it is typed again)."""
    box = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.get_by_text(label, exact=True)
    )
    field = box.locator("input")
    choice = page.get_by_role("option").filter(has_text=option).first
    for _ in range(CHOOSE_TRIES):
        field.click()  # opens the list, also when the box shows this option already
        field.fill(option)
        try:
            choice.wait_for(timeout=CHOOSE_WAIT_MS)
        except PlaywrightTimeout:
            _settle(page)
            continue
        choice.click()
        break
    else:
        raise AssertionError(f"{label!r} never listed {option!r}")
    expect(field).to_have_value(re.compile(re.escape(option)))
    _settle(page)


def _say(page: Page, text: str) -> None:
    """Send a message with the playground's chat box."""
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")


def _grew(page: Page, final: str, nth: int = 1) -> list[str]:
    """The recorded texts of the ``nth`` answer that were shorter beginnings of ``final``."""
    recorded = page.evaluate("window.answerStates")
    states = [s.strip() for n, s in recorded if n == nth and s.strip()]
    return [s for s in dict.fromkeys(states) if s != final and final.startswith(s)]


def _sign_in(page: Page, served: Served) -> None:
    page.goto(served.ui)
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    # The token is checked first: the page's own fields show once it is accepted
    # (the Apps heading shows above the sign-in form too).
    page.get_by_label("Search apps").wait_for()
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
    _sign_in(page, served)

    # A datasource, and a text file with metadata uploaded into it.
    _open(page, "Datasources")
    page.get_by_label("Name", exact=True).fill("widget-docs")
    page.get_by_role("button", name="Create", exact=True).click()
    page.get_by_text("Created datasource widget-docs").wait_for()
    _settle(page)
    page.locator('input[type="file"]').set_input_files(str(article))
    _type(page.get_by_label("Metadata key 1"), "product")
    _type(page.get_by_label("Metadata value 1"), "widget")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("Added 1 entry").wait_for()
    # The entries table refreshes itself until the entry is processed; the server loads
    # the embedding model for this first entry, which a loaded machine takes minutes for.
    page.get_by_text("1 of 1 entries processed").wait_for(timeout=INGEST_TIMEOUT_MS)
    with _api(served) as api:
        [source] = [d for d in api.get("/api/datasources").json() if d["name"] == "widget-docs"]
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
        [app] = [a for a in api.get("/api/apps").json() if a["name"] == "Widget helper"]
        definition = api.get(f"/api/apps/{app['uuid']}").json()["definition"]
    assert app["name"] == "Widget helper" and app["type"] == "chat"
    assert definition["steps"][0]["datasources"] == ["widget-docs"]

    # The playground: the question in the chat box, the product filter in the side
    # panel; the answer arrives in pieces, then its source. Every change of the
    # answer's text in the page is recorded as it happens.
    _open(page, "Playground")
    _choose(page, "App", "Widget helper")
    _type(page.get_by_role("textbox", name="product", exact=True), "widget")
    page.evaluate(RECORD_ANSWER)
    _say(page, QUESTION)
    answer = page.locator('[data-testid="stChatMessage"]').nth(1)
    answer.get_by_test_id("stExpander").get_by_text("Sources (1)").click()
    answer.get_by_text("[1] widget-reset.txt").wait_for()
    final = answer.locator('[data-testid="stMarkdownContainer"]').first.inner_text().strip()
    growing = _grew(page, final)
    assert final and len(growing) >= 3, f"the answer did not arrive in pieces: {growing}"
    shots.take(page, "playground")
    with _api(served) as api:
        [run] = api.get(f"/api/apps/{app['uuid']}/runs").json()
    assert run["status"] == "succeeded" and run["stream"] is True
    assert run["input"] == {"question": QUESTION, "product": "widget"}
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


CHARTED_APP = """\
version: 1
name: Otter facts
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{ input.question }}"
    params: {temperature: 0, seed: 1, max_tokens: 6}
output:
  answer: "{{ answer.text }}"
"""


def test_analytics_page_charts_the_runs_of_an_app(served: Served, page: Page, tmp_path: Path):
    """Runs made through the API (one answered, one failing), then the Analytics page:
    its totals, and its four charts drawn."""
    shots = Shots(tmp_path / "screenshots")
    yaml_type = {"Content-Type": "application/yaml"}
    with _api(served) as api:
        made = api.post("/api/apps", content=CHARTED_APP, headers=yaml_type)
        assert made.status_code == 201, made.text
        run = f"/api/apps/{made.json()['uuid']}/run"
        question = {"input": {"question": "Where do otters sleep?"}}
        answered = api.post(run, json=question, timeout=300)
        assert answered.status_code == 200, answered.text
        broken = CHARTED_APP.replace("{{ input.question }}", "{{ 1 // 0 }}")
        patched = api.patch(f"/api/apps/{made.json()['uuid']}", content=broken, headers=yaml_type)
        assert patched.status_code == 200
        failed = api.post(run, json={"input": {"question": "And?"}})
        assert failed.status_code == 500

    _sign_in(page, served)
    _settle(page)  # a click while the page's script runs can be lost
    _open(page, "Analytics")
    _choose(page, "App", "Otter facts")  # the server is shared by this module's tests
    page.get_by_text("Runs and errors").wait_for()
    metrics = page.locator('[data-testid="stMetric"]')
    assert metrics.nth(0).inner_text().split() == ["Runs", "2"]
    assert metrics.nth(1).inner_text().split() == ["Errors", "1"]
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    expect(charts).to_have_count(4)  # drawn one after another
    for n in range(4):
        charts.nth(n).locator("canvas, svg").first.wait_for()
    assert not page.locator('[data-testid="stException"]').count()
    # The picture: from the range and bucket down to the last charts.
    page.get_by_text("Days (UTC)").evaluate("e => e.scrollIntoView({block: 'start'})")
    shots.take(page, "analytics")
    # The same runs on the Runs page, the newest (failed) one open.
    _open(page, "Runs")
    _choose(page, "App", "Otter facts")
    page.get_by_text("2 runs, newest first").wait_for()
    error = failed.json()["error"]
    page.get_by_text(f"{error['code']}: {error['message']}").wait_for()
    assert not page.locator('[data-testid="stException"]').count()
    shots.take(page, "runs-list")


FAQ = (
    "Opening hours: the shop opens at nine in the morning and closes at six.\n\n"
    "Returns: a product can be returned within thirty days with its receipt.\n\n"
    "Delivery: parcels arrive within two working days.\n"
)
FAQ_APP = """version: 1
name: FAQ bot
type: chat
input:
  question: {type: string, required: true}
steps:
  - id: docs
    kind: retrieve
    datasources: [faq]
    query: "{{ input.question }}"
    top_k: 1
  - id: answer
    kind: llm
    prompt:
      system: "Answer from this text: {{ docs.documents[0].text }}"
      user: "{{ input.question }}"
    history: 2
    params: {temperature: 0, seed: 3, max_tokens: 40}
output:
  answer: "{{ answer.text }}"
  sources: "{{ docs.sources }}"
"""
TURNS = ("When does the shop open?", "Can I return a product?", "How fast is delivery?")


def test_playground_chat_three_turns_in_order_streamed_with_sources(served: Served, page: Page):
    with _api(served) as api:
        ds = api.post("/api/datasources", json={"name": "faq", "type": "text"}).json()["uuid"]
        body = {"entry_data": {"name": "faq.md", "content": FAQ}}
        api.post(f"/api/datasources/{ds}/entries", json=body).raise_for_status()
        entries = f"/api/datasources/{ds}/entries"
        poll_until(lambda: api.get(entries).json()[0]["status"] == "ready")
        made = api.post("/api/apps", content=FAQ_APP, headers={"Content-Type": "application/yaml"})
        assert made.status_code == 201, made.text

    _sign_in(page, served)
    _open(page, "Playground")
    _choose(page, "App", "FAQ bot")
    messages = page.locator('[data-testid="stChatMessage"]')
    page.evaluate(RECORD_ANSWER)
    for n, question in enumerate(TURNS):
        _say(page, question)
        answer = messages.nth(2 * n + 1)
        answer.get_by_text("Sources (1)").wait_for()  # shown once the answer is complete
        assert page.get_by_test_id("stChatInputTextArea").input_value() == ""
    _settle(page)
    texts = [m.locator('[data-testid="stMarkdownContainer"]').first.inner_text().strip()
             for m in messages.all()]  # fmt: skip
    assert texts[0::2] == list(TURNS)  # the questions in order, each above its answer
    with _api(served) as api:
        runs = api.get(f"/api/apps/{made.json()['uuid']}/runs").json()[::-1]
    assert [r["input"]["question"] for r in runs] == list(TURNS)
    assert len({r["session_id"] for r in runs}) == 1  # one conversation
    for run, shown in zip(runs, texts[1::2], strict=True):  # each answer under its question
        assert shown and shown[:12] in run["output"]["answer"], (shown, run["output"])
    # Each answer grew on screen as it was written.
    growing = [_grew(page, answer, n) for n, answer in enumerate(texts[1::2], 1)]
    assert all(growing) and max(map(len, growing)) >= 3, f"not written in pieces: {growing}"
    # Its source, with the text of the chunk the answer was given.
    last = messages.nth(5)
    last.get_by_text("Sources (1)").click()
    last.get_by_text("[1] faq.md").wait_for()
    last.get_by_text("parcels arrive within two working days", exact=False).wait_for()
    # The session is listed by its first question.
    page.get_by_role("button", name=TURNS[0]).wait_for()


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
    # Files set while the script still runs can land on an input the run then replaces.
    _settle(page)
    page.locator('input[type="file"]').set_input_files(str(manual))
    # The browser sends the file to the builder first: add once it is there.
    page.get_by_test_id("stFileChipName").get_by_text("pump-manual.pdf").wait_for()
    page.get_by_test_id("stFileChipIconSpinner").wait_for(state="detached")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_text("Added 1 entry").wait_for()
    page.get_by_text("1 of 1 entries processed").wait_for()
    with _api(served) as api:
        [source] = [d for d in api.get("/api/datasources").json() if d["name"] == "manuals"]
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


CAPITALS_APP = """version: 1
name: Capitals
type: text
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    model: fake:fake
    prompt:
      user: "VERSION: {{ input.question }}"
output:
  answer: "{{ answer.text }}"
"""
# Exact answers per app version (the prompt's first word): v2 breaks France and Spain,
# and fixes Norway.
CAPITALS = {"v1: France": "Paris", "v2: France": "Lyon", "v1: Norway": "Bergen",
            "v2: Norway": "Oslo", "Italy": "Rome", "v1: Spain": "Madrid",
            "v2: Spain": "Lisbon"}  # fmt: skip
CAPITAL_CASES = [
    {"input": {"question": q}, "expected": {"answer": a}}
    for q, a in (("France", "Paris"), ("Norway", "Oslo"), ("Italy", "Rome"), ("Spain", "Madrid"))
]


def _evaluations_done(api: httpx.Client, *versions: int) -> list[str]:
    """Evaluations of these app versions, started together; their ids once all are done."""
    one_word = {"type": "regex", "name": "one word", "value": "^[A-Z][a-z]+$"}
    ids = []
    for version in versions:
        body = {"dataset": "capitals", "app": "Capitals", "app_version": version,
                "scorers": [{"type": "equals"}, one_word], "concurrency": 2}  # fmt: skip
        made = api.post("/api/evaluations", json=body)
        assert made.status_code == 202, made.text
        ids.append(str(made.json()["id"]))

    def statuses() -> list[str]:
        return [api.get(f"/api/evaluations/{i}").json()["status"] for i in ids]

    poll_until(lambda: all(s in ("done", "failed", "cancelled") for s in statuses()))
    assert statuses() == ["done"] * len(ids)
    return ids


def test_compare_page_puts_the_regressed_cases_first(served: Served, page: Page, tmp_path: Path):
    """Two evaluations of two app versions, with exact answers from a scripted model
    server: the comparison shows the deltas, then the regressed case, the improved one,
    and the unchanged ones, each with both outputs side by side."""
    shots = Shots(tmp_path / "screenshots")
    replies = FakeModel(default="I do not know", replies=CAPITALS, pause=0)
    with serve_model(replies) as model, _api(served) as api:
        provider = {"name": "fake", "base_url": model.url, "models": ["fake"]}
        assert api.post("/api/providers", json=provider).status_code == 201
        yaml_type = {"Content-Type": "application/yaml"}
        made = api.post(
            "/api/apps", content=CAPITALS_APP.replace("VERSION", "v1"), headers=yaml_type
        )
        assert made.status_code == 201, made.text
        v2 = CAPITALS_APP.replace("VERSION", "v2")
        assert api.patch(
            f"/api/apps/{made.json()['uuid']}", content=v2, headers=yaml_type
        ).is_success
        assert api.post("/api/datasets", json={"name": "capitals"}).status_code == 201
        cases = {"cases": CAPITAL_CASES}
        assert api.post("/api/datasets/capitals/cases", json=cases).status_code == 201
        first, second = _evaluations_done(api, 1, 2)
        # The later tests of the module list the providers: this one's server goes now.
        assert api.delete("/api/providers/fake").status_code == 204

    _sign_in(page, served)
    _open(page, "Compare evaluations")
    # The newer evaluation is B: version 2 against version 1.
    metrics = page.locator('[data-testid="stMetric"]')
    metrics.first.wait_for()
    _settle(page)
    shown = [[t for t in m.inner_text().split("\n") if t.strip()] for m in metrics.all()]
    assert shown[0] == ["Pass rate", "50%", "-25 pts"]  # from 75%
    assert [s[:2] for s in shown[1:4]] == [
        ["Regressed", "2"],
        ["Improved", "1"],
        ["Unchanged", "1"],
    ]
    # The page draws its sections one after another: read them once all are there.
    expect(page.locator("h3")).to_have_count(3)
    expect(page.locator('[data-testid="stCode"]')).to_have_count(8)
    headings = page.locator("h3").all_inner_texts()
    assert [h.strip() for h in headings] == [
        "Regressed: passed in A, fail in B (2)",
        "Improved: failed in A, pass in B (1)",
        "Unchanged (1)",
    ]
    # Side by side: A's output, then B's, case by case, the regressed ones first.
    outputs = page.locator('[data-testid="stCode"]').all_inner_texts()
    assert [o.strip() for o in outputs] == [
        "Paris", "Lyon", "Madrid", "Lisbon", "Bergen", "Oslo", "Rome", "Rome"
    ]  # fmt: skip
    page.get_by_text("expected Paris, got Lyon").first.wait_for()
    assert not page.locator('[data-testid="stException"]').count()
    with _api(served) as api:
        compared = api.get("/api/evaluations/compare", params={"a": first, "b": second}).json()
    assert compared["regressed"] and compared["improved"]
    page.get_by_text("A (before)").evaluate("e => e.scrollIntoView({block: 'start'})")
    shots.take(page, "compare")


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


def test_admin_points_default_at_a_real_server_and_runs_an_app_with_it(
    served: Served, page: Page, tmp_path: Path, llama_server: str
):
    shots = Shots(tmp_path / "screenshots")
    with _api(served) as api:
        made = api.post("/api/apps", content=ECHO_APP, headers={"Content-Type": "application/yaml"})
        assert made.status_code == 201, made.text
    _sign_in(page, served)

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
    _choose(page, "Provider", "llama")
    page.get_by_role("button", name="Test connection").click()
    page.get_by_text("llama answered").wait_for()
    assert "smollm2" in page.get_by_text("llama answered").inner_text()
    _settle(page)
    _choose(page, "Points at", "llama:smollm2")
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
    _choose(page, "App", "Echo")
    _say(page, "Say hello.")
    page.get_by_text("succeeded", exact=False).first.wait_for()
    with _api(served) as api:
        [run] = api.get(f"/api/apps/{made.json()['uuid']}/runs").json()
        record = api.get(f"/api/runs/{run['id']}").json()
    assert record["status"] == "succeeded" and record["output"]["answer"].strip()
    assert record["steps"][0]["usage_reported"] is False  # llama_cpp.server's answer
