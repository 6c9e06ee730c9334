"""Datasets and cases over the API: paths, status codes, revisions, JSONL and CSV import
and export, a stored run added as a case, and bad input refused with nothing stored."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from app_docs import TEXT_APP
from fastapi.testclient import TestClient

from appforge.core.settings import Settings

CASES = [
    {"input": {"question": "Capital of France?"}, "expected": {"answer": "Paris"}},
    {"input": {"question": "2 + 2?"}, "expected": {"answer": "4"}, "metadata": {"kind": "math"}},
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, local_provider: Any, embedder: Any) -> Any:
    """One server for the module: its datasets are made per test with unique names."""
    from pydantic import SecretStr

    from api.app import create_app
    from tests.conftest import ADMIN_TOKEN

    settings = Settings(
        home=tmp_path_factory.mktemp("datasets_home"),
        admin_token=SecretStr(ADMIN_TOKEN),
        evals={"max_cases_per_request": 5, "max_cases_per_dataset": 8, "max_case_bytes": 400},
    )
    app = create_app(settings, providers={"local": local_provider}, embedder=embedder)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
        yield client


def _dataset(api: TestClient, name: str) -> dict[str, Any]:
    r = api.post("/api/datasets", json={"name": name, "description": "d"})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"]["code"] == code, body
    return body


def test_datasets_crud_by_id_and_name(api: TestClient):
    made = _dataset(api, "crud")
    assert (made["revision"], made["case_count"], made["description"]) == (1, 0, "d")
    assert api.get(f"/api/datasets/{made['id']}").json()["name"] == "crud"
    assert api.get("/api/datasets/crud").json()["id"] == made["id"]
    assert "crud" in [d["name"] for d in api.get("/api/datasets").json()]
    # The list is paged: a page of one, and a page past the end.
    _dataset(api, "crud-second")
    names = [d["name"] for d in api.get("/api/datasets").json()]
    assert [d["name"] for d in api.get("/api/datasets?limit=1").json()] == names[:1]
    assert api.get(f"/api/datasets?offset={len(names)}").json() == []
    for bad in ("limit=0", "limit=1001", "offset=-1"):
        _error(api.get(f"/api/datasets?{bad}"), 422, "VALIDATION_ERROR")
    _error(api.post("/api/datasets", json={"name": "crud"}), 409, "DATASET_EXISTS")
    r = api.patch("/api/datasets/crud", json={"name": "crud2", "description": "e"})
    assert r.status_code == 200 and r.json()["revision"] == 1  # no case changed
    assert api.delete("/api/datasets/crud2").status_code == 204
    _error(api.get(f"/api/datasets/{made['id']}"), 404, "DATASET_NOT_FOUND")


def test_cases_add_update_delete_raise_the_revision(api: TestClient):
    ds = _dataset(api, "cases")
    r = api.post("/api/datasets/cases/cases", json={"cases": CASES})
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["revision"] == 2 and len(added["ids"]) == 2
    listed = api.get("/api/datasets/cases/cases")
    assert listed.headers["x-total-count"] == "2"
    assert [c["id"] for c in listed.json()] == added["ids"]
    assert listed.json()[1]["metadata"] == {"kind": "math"}
    first = added["ids"][0]
    r = api.patch(f"/api/datasets/cases/cases/{first}", json={"expected": {"answer": "Paris."}})
    assert r.status_code == 200 and r.json()["expected"] == {"answer": "Paris."}
    assert r.json()["input"] == CASES[0]["input"]
    assert api.get(f"/api/datasets/{ds['id']}").json()["revision"] == 3
    # The same values again change nothing: the revision stays.
    api.patch(f"/api/datasets/cases/cases/{first}", json={"expected": {"answer": "Paris."}})
    assert api.get("/api/datasets/cases").json()["revision"] == 3
    assert api.delete(f"/api/datasets/cases/cases/{first}").status_code == 204
    body = api.get("/api/datasets/cases").json()
    assert (body["revision"], body["case_count"]) == (4, 1)
    _error(api.delete(f"/api/datasets/cases/cases/{first}"), 404, "CASE_NOT_FOUND")


def test_cases_import_and_export_jsonl_and_csv_round_trip(api: TestClient):
    _dataset(api, "files")
    jsonl = "\n".join(json.dumps(c) for c in CASES) + "\n\n"
    r = api.post(
        "/api/datasets/files/cases/import",
        content=jsonl,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["revision"], len(r.json()["ids"])) == (2, 2)
    csv_text = 'input.question,expected.answer,metadata\n"Largest planet?",Jupiter,"{""k"": 1}"\n'
    r = api.post(
        "/api/datasets/files/cases/import", content=csv_text, headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 201, r.text
    exported = api.get("/api/datasets/files/cases/export?format=jsonl")
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert [c["input"]["question"] for c in lines] == [
        "Capital of France?",
        "2 + 2?",
        "Largest planet?",
    ]
    assert lines[2]["expected"] == {"answer": "Jupiter"} and lines[2]["metadata"] == {"k": 1}
    as_csv = api.get("/api/datasets/files/cases/export", params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    # The CSV export imports again into another dataset, the same cases.
    _dataset(api, "files-copy")
    r = api.post("/api/datasets/files-copy/cases/import?format=csv", content=as_csv.text)
    assert r.status_code == 201, r.text
    again = api.get("/api/datasets/files-copy/cases/export").text.splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if k != "id"} for x in again]
    assert strip == [{k: v for k, v in c.items() if k != "id"} for c in lines]


@pytest.mark.parametrize(
    ("body", "kind", "code", "status"),
    [
        ('{"input": {"q": 1}}\nnot json\n', "jsonl", "CASE_FILE_INVALID", 422),
        ('{"input": {"q": 1}, "extra": 2}\n', "jsonl", "CASE_FILE_INVALID", 422),
        ('{"expected": {}}\n', "jsonl", "CASE_FILE_INVALID", 422),
        ("question,answer\nq,a\n", "csv", "CASE_FILE_INVALID", 422),
        ('input\n"[1, 2]"\n', "csv", "CASE_FILE_INVALID", 422),
        ('{"input": {"q": "a\\u0000b"}}\n', "jsonl", "CASE_FILE_INVALID", 422),
        ('{"input": {"q": NaN}}\n', "jsonl", "CASE_FILE_INVALID", 422),
        (
            "".join(json.dumps({"input": {"n": i}}) + "\n" for i in range(6)),
            "jsonl",
            "TOO_MANY_CASES",
            413,
        ),
        (json.dumps({"input": {"q": "x" * 500}}) + "\n", "jsonl", "CASE_INVALID", 422),
    ],
)
def test_cases_import_refuses_bad_files_storing_nothing(
    api: TestClient, body: str, kind: str, code: str, status: int
):
    name = f"bad-{kind}-{zlib.crc32(body.encode())}"
    _dataset(api, name)
    media = {"jsonl": "application/x-ndjson", "csv": "text/csv"}[kind]
    r = api.post(
        f"/api/datasets/{name}/cases/import", content=body, headers={"Content-Type": media}
    )
    _error(r, status, code)
    after = api.get(f"/api/datasets/{name}").json()
    assert (after["revision"], after["case_count"]) == (1, 0)


def test_cases_bad_input_is_refused_and_bounded(api: TestClient):
    _dataset(api, "bounded")
    _error(api.post("/api/datasets/bounded/cases", json={"cases": []}), 422, "CASE_INVALID")
    r = api.post("/api/datasets/bounded/cases", json={"cases": [{"expected": {}}]})
    _error(r, 422, "VALIDATION_ERROR")
    six = [{"input": {"n": i}} for i in range(6)]
    _error(api.post("/api/datasets/bounded/cases", json={"cases": six}), 413, "TOO_MANY_CASES")
    five = six[:5]
    assert api.post("/api/datasets/bounded/cases", json={"cases": five}).status_code == 201
    r = api.post("/api/datasets/bounded/cases", json={"cases": five})  # 10 > 8 per dataset
    _error(r, 413, "TOO_MANY_CASES")
    assert api.get("/api/datasets/bounded").json()["case_count"] == 5
    _error(api.post("/api/datasets/nope/cases", json={"cases": five}), 404, "DATASET_NOT_FOUND")
    _error(api.post("/api/datasets", json={"name": "a/b"}), 422, "VALIDATION_ERROR")


def test_run_to_dataset_copies_input_and_optionally_output(
    api: TestClient, create: Callable[..., dict[str, Any]]
):
    app = create(api, TEXT_APP.replace("max_tokens: 8", "max_tokens: 2"))
    run = api.post(f"/api/apps/{app['uuid']}/run", json={"input": {"question": "Hi?"}})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["id"]
    _dataset(api, "from-runs")
    r = api.post(f"/api/runs/{run_id}/to-dataset", json={"dataset": "from-runs"})
    assert r.status_code == 201, r.text
    body = {"dataset": "from-runs", "expected_from_output": True}
    assert api.post(f"/api/runs/{run_id}/to-dataset", json=body).json()["revision"] == 3
    cases = api.get("/api/datasets/from-runs/cases").json()
    assert [c["input"] for c in cases] == [{"question": "Hi?", "tone": "plain"}] * 2
    assert cases[0]["expected"] == {}
    assert cases[1]["expected"] == run.json()["output"]
    assert cases[1]["metadata"]["run_id"] == run_id
    _error(api.post("/api/runs/nope/to-dataset", json=body), 404, "RUN_NOT_FOUND")


def test_cases_import_replace_is_one_change_keeping_ids_by_input(api: TestClient):
    _dataset(api, "replaced")
    first = "".join(json.dumps(c) + "\n" for c in CASES)
    url = "/api/datasets/replaced/cases/import?replace=true"
    r = api.post(url, content=first)
    assert r.status_code == 201, r.text
    assert r.json()["revision"] == 2
    ids = r.json()["ids"]
    # The same file again changes nothing: the revision stays, and so do the ids.
    again = api.post(url, content=first).json()
    assert (again["revision"], again["ids"]) == (2, ids)
    # The second case now expects another answer, comes first, and a new case is added.
    changed = [
        {**CASES[1], "expected": {"answer": "four"}},
        CASES[0],
        {"input": {"question": "Largest planet?"}},
    ]
    body = api.post(url, content="".join(json.dumps(c) + "\n" for c in changed)).json()
    assert body["revision"] == 3 and body["ids"][:2] == [ids[1], ids[0]]
    listed = api.get("/api/datasets/replaced/cases").json()
    assert [c["id"] for c in listed] == body["ids"]
    assert [c["expected"] for c in listed] == [{"answer": "four"}, {"answer": "Paris"}, {}]
    # Fewer cases: the others are gone, in the same one revision.
    body = api.post(url, content=json.dumps(CASES[0]) + "\n").json()
    assert (body["revision"], body["ids"]) == (4, [ids[0]])
    assert api.get("/api/datasets/replaced").json()["case_count"] == 1
    # Bounds hold for a replace too, and a refused one stores nothing.
    six = "".join(json.dumps({"input": {"n": i}}) + "\n" for i in range(6))
    _error(api.post(url, content=six), 413, "TOO_MANY_CASES")
    _error(api.post(url, content=""), 422, "CASE_INVALID")
    _error(api.post(url, content="not json\n"), 422, "CASE_FILE_INVALID")
    r = api.post("/api/datasets/replaced/cases/import?replace=maybe", content=first)
    _error(r, 422, "VALIDATION_ERROR")
    after = api.get("/api/datasets/replaced").json()
    assert (after["revision"], after["case_count"]) == (4, 1)
