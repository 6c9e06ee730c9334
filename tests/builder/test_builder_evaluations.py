"""The Datasets, Evaluations and Compare pages with AppTest, on the real API.

The apps answer from a scripted OpenAI-compatible model on 127.0.0.1 (the network
edge), so every output is exact; the API runs no evaluation threads, and the tests
work the cases one at a time (``run_once``) between two runs of a page, so what the
page shows in the middle of an evaluation is known.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e.fake_model import FakeModel, serve_model
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from appforge.client import SCORER_TYPES
from appforge.core.settings import OpenAISettings, Settings
from builder.scorer_form import HINTS
from tests.evals.support import ended, state

Page = Callable[[str], AppTest]
YAML = {"Content-Type": "application/yaml"}
# The prompt's first words name the app version, so each version gets its own answers.
APP = """\
version: 1
name: Capitals
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    model: fake
    prompt:
      user: "VERSION: {{ input.question }}"
output:
  answer: "{{ answer.text }}"
"""
REPLIES = {
    "v1: France": "Paris",
    "v2: France": "Lyon",
    "v1: Norway": "Bergen",
    "v2: Norway": "Oslo",
    "Italy": "Rome",
    "v1: Spain": "Madrid",
    "v2: Spain": "Lisbon",
}
CASES = [
    {"input": {"question": "France"}, "expected": {"answer": "Paris"}},  # v2 regresses
    {"input": {"question": "Norway"}, "expected": {"answer": "Oslo"}},  # v2 improves
    {"input": {"question": "Italy"}, "expected": {"answer": "Rome"}},  # both pass
    {"input": {"question": "Spain"}, "expected": {"answer": "Madrid"}},  # v2 regresses
]


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModel]:
    with serve_model(FakeModel(default="I do not know", replies=REPLIES, pause=0)) as served:
        yield served


@pytest.fixture
def client(
    make_client: Callable[[Settings], TestClient],
    make_settings: Callable[..., Settings],
    model: FakeModel,
) -> TestClient:
    """The API with the model ``fake`` (the scripted edge), and no evaluation threads."""
    settings = make_settings(
        openai=OpenAISettings(base_url=model.url),
        models={"default": "local:smollm2", "fake": "openai:fake"},
        evals={"workers": 0},
    )
    return make_client(settings)


def _app(client: TestClient) -> str:
    made = client.post("/api/apps", content=APP.replace("VERSION", "v1"), headers=YAML)
    assert made.status_code == 201, made.text
    uuid = str(made.json()["uuid"])
    second = client.patch(f"/api/apps/{uuid}", content=APP.replace("VERSION", "v2"), headers=YAML)
    assert second.status_code == 200, second.text
    return uuid


def _dataset(client: TestClient, name: str = "capitals") -> str:
    made = client.post("/api/datasets", json={"name": name})
    assert made.status_code == 201, made.text
    assert client.post(f"/api/datasets/{name}/cases", json={"cases": CASES}).status_code == 201
    return str(made.json()["id"])


def _drain(client: TestClient) -> None:
    while state(client).evaluations.run_once():
        pass


def _texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def _cases(client: TestClient, dataset: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get(f"/api/datasets/{dataset}/cases").json()
    return found


def _click(at: AppTest, label: str) -> AppTest:
    [button] = [b for b in at.button if b.label == label]
    return button.click().run()


def test_datasets_page_cases_by_hand_import_export_and_from_a_run(page: Page, client: TestClient):
    at = page("datasets").run()
    assert not at.exception and "No datasets yet." in _texts(at, "caption")
    at.text_input(key="dsets_new_name").set_value("capitals")
    _click(at, "Create dataset")
    assert "Created dataset capitals" in _texts(at, "success")
    [dataset] = client.get("/api/datasets").json()

    # A case by hand; a field that is not a JSON object is refused and nothing is stored.
    at.text_area(key="dsets_add_in").set_value('{"question": "France"')
    _click(at, "Add case")
    assert _texts(at, "error")[0].startswith("CASE_INVALID: input is not JSON (line 1)")
    assert _cases(client, "capitals") == []
    at.text_area(key="dsets_add_in").set_value('{"question": "France"}')
    at.text_area(key="dsets_add_ex").set_value('{"answer": "Paris"}')
    _click(at, "Add case")
    assert "Added a case (revision 2)" in _texts(at, "success")
    table = at.dataframe[0].value
    assert list(table["input"]) == ['{"question": "France"}']
    assert list(table["expected"]) == ['{"answer": "Paris"}']

    # Edit the case (stored, the revision rises); a bad edit is refused.
    [case] = _cases(client, "capitals")
    at.text_area(key=f"dsets_case_expected_{case['id']}").set_value('{"answer": "Paris, France"}')
    at.button(key="dsets_case_save").click().run()
    assert "Saved case #1" in _texts(at, "success")
    assert _cases(client, "capitals")[0]["expected"] == {"answer": "Paris, France"}
    at.text_area(key=f"dsets_case_metadata_{case['id']}").set_value("[1, 2]")
    at.button(key="dsets_case_save").click().run()
    assert _texts(at, "error") == [
        'CASE_INVALID: metadata must be a JSON object, like {"question": "..."}'
    ]
    assert _cases(client, "capitals")[0]["metadata"] == {}

    # Import with the uploader: a bad file is the API's error (its line), nothing stored;
    # a good one appends its cases.
    at.file_uploader[0].set_value(("bad.jsonl", b'{"input": {"question": "Oslo"}}\nnope\n', ""))
    at.run()
    at.button(key="dsets_import").click().run()
    assert _texts(at, "error")[0].startswith("CASE_FILE_INVALID: line 2")
    assert len(_cases(client, "capitals")) == 1
    lines = "\n".join(json.dumps(c) for c in CASES[1:3]).encode()
    at.file_uploader[0].set_value(("more.jsonl", lines, "application/x-ndjson"))
    at.run()
    at.button(key="dsets_import").click().run()
    assert "Imported 2 cases from more.jsonl (revision 4)" in _texts(at, "success")
    assert list(at.dataframe[0].value["#"]) == [1, 2, 3]

    # Export as CSV: fetched when asked for, then offered as a download.
    at.radio(key="dsets_export_as").set_value("CSV")
    at.button(key="dsets_export").click().run()
    [download] = at.get("download_button")
    assert download.proto.label == "Download capitals.csv"
    exported = at.session_state["dsets_exported"][1]
    assert exported.splitlines()[0] == "id,input,expected,metadata"
    assert [c["id"] for c in _cases(client, "capitals")] == [
        row.split(",")[0] for row in exported.splitlines()[1:]
    ]

    # A stored run as a case, its output as the expected answer.
    uuid = _app(client)
    run = client.post(f"/api/apps/{uuid}/run", json={"input": {"question": "Norway"}}).json()
    assert run["output"] == {"answer": "Oslo"}
    at.text_input(key="dsets_run_id").set_value(run["run"]["id"])
    at.checkbox(key="dsets_run_expected").check()
    at.button(key="dsets_run_add").click().run()
    assert not at.error, _texts(at, "error")
    added = _cases(client, "capitals")[-1]
    assert (added["input"], added["expected"]) == ({"question": "Norway"}, {"answer": "Oslo"})
    assert added["metadata"]["run_id"] == run["run"]["id"]
    at.text_input(key="dsets_run_id").set_value("no-such-run")
    at.button(key="dsets_run_add").click().run()
    assert _texts(at, "error") == ["RUN_NOT_FOUND: no run 'no-such-run'"]

    # The same from the Runs page, on the opened run.
    runs = page("runs").run()
    runs.checkbox(key="runs_to_dataset_expected").check()
    runs.button(key="runs_to_dataset_add").click().run()
    assert "Added the run to capitals (revision 6)" in _texts(runs, "success")
    assert [c["input"]["question"] for c in _cases(client, "capitals")][-2:] == ["Norway"] * 2

    # Rename; then delete after the confirmation.
    at.run()
    at.text_input(key=f"dsets_name_{dataset['id']}").set_value("capital cities")
    _click(at, "Save")
    assert "Saved dataset capital cities" in _texts(at, "success")
    at.checkbox(key="dsets_confirm").check().run()
    at.button(key="dsets_delete").click().run()
    assert "Deleted dataset capital cities" in _texts(at, "success")
    assert client.get("/api/datasets").json() == []


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_evaluations_page_starts_one_watches_it_fill_in_and_cancels_it(
    page: Page, client: TestClient
):
    uuid = _app(client)
    _dataset(client)
    at = page("evaluations").run()
    assert not at.exception and "No evaluations yet." in _texts(at, "caption")
    # App version 1, its answers; scorers: equals (the first row), and a regex added.
    at.selectbox(key=f"ev_app_version_{uuid}").set_value(1).run()
    # Every scorer type the server takes is offered (the client's list), each with a hint.
    assert at.selectbox(key="ev_sc_new_type").options == list(SCORER_TYPES)
    assert set(HINTS) == set(SCORER_TYPES)
    at.selectbox(key="ev_sc_new_type").set_value("regex")
    at.button(key="ev_sc_add").click().run()
    [regex] = [r["id"] for r in at.session_state["ev_scorers"] if r["type"] == "regex"]
    at.text_input(key=f"ev_sc_{regex}_value").set_value("(")
    at.number_input(key="ev_concurrency").set_value(1)
    at.button(key="ev_start").click().run()
    # The server refuses a pattern that does not compile; nothing starts.
    assert _texts(at, "error")[0].startswith("SCORER_INVALID: scorer 'regex'")
    assert client.get("/api/evaluations").json() == []
    at.text_input(key=f"ev_sc_{regex}_value").set_value(r"^[A-Z]\w+$")
    at.button(key="ev_start").click().run()
    assert not at.error, _texts(at, "error")
    [made] = client.get("/api/evaluations").json()
    assert made["app_version"] == 1 and made["concurrency"] == 1
    assert made["scorers"] == [{"type": "equals"}, {"type": "regex", "value": r"^[A-Z]\w+$"}]
    assert _texts(at, "success") == [f"Started evaluation {made['id'][:8]} of Capitals"]
    assert _metrics(at)["Status"] == "queued" and _metrics(at)["Cases done"] == "0 / 4"

    # One case done: it shows, with its output and each scorer's verdict.
    assert state(client).evaluations.run_once()
    at.run()
    assert _metrics(at)["Status"] == "running" and _metrics(at)["Cases done"] == "1 / 4"
    assert _metrics(at)["Pass rate"] == "100%"
    results = next(d.value for d in at.dataframe if "output" in d.value.columns)
    assert list(results["status"]) == ["done", "pending", "pending", "pending"]
    assert list(results["output"]) == ["Paris", "", "", ""]
    assert (results["equals"][0], results["regex"][0], results["passed"][0]) == (
        "✓ 1.00",
        "✓ 1.00",
        "✓",
    )
    assert any(m.startswith("**equals** ✓ 1.00: equal") for m in _texts(at, "markdown"))

    # Cancel: the cases not done are cancelled, the one done stays.
    at.button(key="ev_cancel").click().run()
    assert _texts(at, "success") == [f"Cancelled evaluation {made['id'][:8]}: 1 of 4 cases done"]
    assert _metrics(at)["Status"] == "cancelled"
    assert at.button(key="ev_cancel").disabled
    assert not state(client).evaluations.run_once()

    # Another, of the current version, run to the end: its summary.
    at.selectbox(key=f"ev_app_version_{uuid}").set_value(None)
    at.button(key="ev_start").click().run()
    _drain(client)
    at.run()
    metrics = _metrics(at)
    assert (metrics["Status"], metrics["Cases done"], metrics["Pass rate"]) == (
        "done",
        "4 / 4",
        "50%",
    )
    listed = next(d.value for d in at.dataframe if "pass rate" in d.value.columns)
    assert list(listed["status"]) == ["done", "cancelled"]
    assert list(listed["version"].fillna(0)) == [0, 1]


def _evaluate(client: TestClient, version: int) -> str:
    body = {"dataset": "capitals", "app": "Capitals", "app_version": version,
            "scorers": [{"type": "equals"}], "concurrency": 1}  # fmt: skip
    made = client.post("/api/evaluations", json=body)
    assert made.status_code == 202, made.text
    _drain(client)
    assert (ended(client, made.json()["id"]) or {}).get("status") == "done"
    return str(made.json()["id"])


def test_compare_page_shows_deltas_then_regressed_improved_unchanged(
    page: Page, client: TestClient
):
    _app(client)
    _dataset(client)
    at = page("compare").run()
    assert not at.exception
    assert "Run two evaluations (Evaluations page) to compare them." in _texts(at, "info")
    first, second = _evaluate(client, 1), _evaluate(client, 2)
    at.run()
    # The newer is B by default: version 2 against version 1.
    assert (at.selectbox(key="cmp_a").value, at.selectbox(key="cmp_b").value) == (first, second)
    metrics = {m.label: (m.value, m.delta) for m in at.metric}
    assert metrics["Pass rate"] == ("50%", "-25 pts")  # from 75%
    assert [metrics[k][0] for k in ("Regressed", "Improved", "Unchanged")] == ["2", "1", "1"]
    assert metrics["Mean equals"] == ("0.50", "-0.25")
    table = at.dataframe[0].value
    assert list(table["change"]) == ["regressed", "regressed", "improved", "same"]
    assert list(table["A output"]) == ["Paris", "Madrid", "Bergen", "Rome"]
    assert list(table["B output"]) == ["Lyon", "Lisbon", "Oslo", "Rome"]
    assert list(table["A"]) == ["✓ pass", "✓ pass", "✗ fail", "✓ pass"]
    assert _texts(at, "subheader") == [
        "Regressed: passed in A, fail in B (2)",
        "Improved: failed in A, pass in B (1)",
        "Unchanged (1)",
    ]
    shown = [c.value for c in at.code]  # A beside B, case by case
    assert shown == ["Paris", "Lyon", "Madrid", "Lisbon", "Bergen", "Oslo", "Rome", "Rome"]
    assert any("expected Paris, got Lyon" in c for c in _texts(at, "caption"))

    # The other way round: what regressed has improved.
    at.selectbox(key="cmp_a").set_value(second)
    at.selectbox(key="cmp_b").set_value(first).run()
    assert {m.label: m.delta for m in at.metric}["Pass rate"] == "+25 pts"
    assert list(at.dataframe[0].value["change"]) == ["regressed", "improved", "improved", "same"]
    assert list(at.dataframe[0].value["B output"]) == ["Bergen", "Paris", "Madrid", "Rome"]
    at.selectbox(key="cmp_b").set_value(second).run()
    assert "Pick two different evaluations." in _texts(at, "info")
