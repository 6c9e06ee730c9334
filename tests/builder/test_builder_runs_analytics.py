"""The Runs and Analytics pages with AppTest, on runs made through the real API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

Page = Callable[[str], AppTest]
YAML = {"Content-Type": "application/yaml"}
APP = """\
version: 1
name: NAME
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      system: Answer briefly.
      user: "{{ input.question }}"
    params: {temperature: 0, seed: 1, max_tokens: 3}
output:
  answer: "{{ answer.text }}"
"""
# Fails while rendering, before any model call: a stored failed run, quickly.
BROKEN = APP.replace('user: "{{ input.question }}"', 'user: "{{ 1 // 0 }}"')


def _app(client: TestClient, name: str, text: str = APP) -> str:
    r = client.post("/api/apps", content=text.replace("NAME", name), headers=YAML)
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _run(client: TestClient, uuid: str, question: str) -> Any:
    return client.post(f"/api/apps/{uuid}/run", json={"input": {"question": question}})


def _table(at: AppTest) -> Any:
    return at.dataframe[0].value


def _chart_count(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


def test_runs_page_lists_every_app_filters_and_opens_a_run(page: Page, client: TestClient):
    otters = _app(client, "Otters")
    broken = _app(client, "Broken", BROKEN)
    ok = _run(client, otters, "Why do otters hold hands?")
    assert ok.status_code == 200
    failed = _run(client, broken, "Never answered").json()["error"]
    assert failed["code"]

    at = page("runs").run()
    assert not at.exception
    table = _table(at)
    assert list(table["app"]) == ["Broken", "Otters"]
    assert list(table["input"]) == ["Never answered", "Why do otters hold hands?"]
    assert table["status"][0].startswith("failed (") and table["status"][1] == "succeeded"
    assert table["tokens out"][1] == ok.json()["run"]["usage"]["completion_tokens"] > 0
    assert ok.json()["session"]["id"].startswith(table["session"][1].rstrip("…"))
    # The newest run is open: its error, and its input.
    assert [e.value for e in at.error] == [f"{failed['code']}: {failed['message']}"]
    assert any("Never answered" in str(j.value) for j in at.json)

    at.selectbox(key="runs_app").set_value(otters).run()
    assert list(_table(at)["app"]) == ["Otters"] and not at.error
    # Opening the run: its rendered prompt (every message), answer, timings, tokens.
    shown = [c.value for c in at.code]
    assert "Answer briefly." in shown and "Why do otters hold hands?" in shown
    assert ok.json()["output"]["answer"] in shown
    assert any("tokens in" in c.value and " ms" in c.value for c in at.caption)
    assert [m.value for m in at.metric][0] == "succeeded"

    at.selectbox(key="runs_app").set_value("")
    at.selectbox(key="runs_status").set_value("failed").run()
    assert list(_table(at)["app"]) == ["Broken"]
    at.selectbox(key="runs_status").set_value("any")
    at.selectbox(key="runs_period").set_value("Between dates").run()
    assert len(_table(at)) == 2  # the last 7 days by default
    long_ago = datetime(2020, 1, 1).date()
    at.date_input(key="runs_days").set_value((long_ago, long_ago + timedelta(days=3))).run()
    assert not at.dataframe and any("No runs match" in c.value for c in at.caption)


def test_analytics_page_charts_an_app_and_a_prompt(page: Page, client: TestClient):
    app = _app(client, "Charted")
    assert _run(client, app, "Hello there").status_code == 200
    broken = BROKEN.replace("NAME", "Charted")
    assert client.patch(f"/api/apps/{app}", content=broken, headers=YAML).is_success
    assert _run(client, app, "Hello again").status_code == 500

    at = page("analytics").run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Runs"] == "2" and metrics["Errors"] == "1"
    assert metrics["Latency p50"].endswith(" ms")
    assert _chart_count(at) == 4
    versions = at.dataframe[0].value
    assert list(versions["app_version"]) == [1, 2] and list(versions["errors"]) == [0, 1]
    at.radio(key="an_bucket").set_value("hour").run()
    assert not at.error and _chart_count(at) == 4
    # A range too long for hour buckets is the API's own error, shown.
    today = datetime.now(UTC).date()
    at.date_input(key="an_days").set_value((today - timedelta(days=100), today)).run()
    assert [e.value for e in at.error][0].startswith("VALIDATION_ERROR: this range needs")
    at.radio(key="an_bucket").set_value("day").run()
    assert not at.error and _chart_count(at) == 4
    at.date_input(key="an_days").set_value((today - timedelta(days=30), today - timedelta(days=20)))
    at.run()
    assert any("No finished runs" in i.value for i in at.info) and _chart_count(at) == 0

    # Per prompt: the runs that used a managed prompt's version.
    uc = client.post("/api/v1/use-cases", json={"name": "Greetings"}).json()["id"]
    prompt = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greet"}).json()["id"]
    version = {"type": "text", "template_text": "Say hi to {{ q }}."}
    assert client.post(f"/api/v1/prompts/{prompt}/versions", json=version).status_code == 201
    client.post(f"/api/v1/prompts/{prompt}/versions/1/promote", json={"label": "production"})
    pinned = APP.replace(
        """prompt:
      system: Answer briefly.
      user: "{{ input.question }}\"""",
        'prompt: {ref: greet, label: production, variables: {q: "{{ input.question }}"}}',
    )
    assert _run(client, _app(client, "Greeter", pinned), "Ada").status_code == 200
    at.date_input(key="an_days").set_value((today - timedelta(days=6), today))
    at.radio(key="an_scope").set_value("Prompt").run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["Runs"] == "1"
    assert _chart_count(at) == 4
    assert list(at.dataframe[1].value["label"]) == ["production"]
