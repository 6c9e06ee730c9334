"""The datasources API: the seed's paths and bodies, entry status, upload, search, errors."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appforge.client import Client, InvalidRequestError
from appforge.core.settings import Settings
from tests.datasources.support import (
    Pages,
    make_docx,
    make_padded_pdf,
    make_pdf,
    serve_pages,
    wait_for_entry,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples"


@pytest.fixture
def pages() -> Iterator[Pages]:
    with serve_pages() as served:
        yield served


def _datasource(client: TestClient, name: str = "docs", type: str = "mixed", **extra: Any) -> str:
    r = client.post("/api/datasources", json={"name": name, "type": type, **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _add(client: TestClient, ds: str, metadata: dict[str, Any] | None = None, **data: Any) -> Any:
    body: dict[str, Any] = {"entry_data": data}
    if metadata is not None:
        body["entry_metadata"] = metadata
    return client.post(f"/api/datasources/{ds}/entries", json=body)


def _ready(client: TestClient, ds: str, metadata: dict[str, Any] | None = None, **data: Any) -> Any:
    r = _add(client, ds, metadata, **data)
    assert r.status_code == 201, r.text
    entry = wait_for_entry(client, ds, r.json()["uuid"])
    assert entry["status"] == "ready", entry
    return entry


def _vectors(client: TestClient, ds: str, entry: str | None = None) -> int:
    app: Any = client.app
    return int(app.state.api.datasources.index.count(ds, entry))


# --- datasources ---------------------------------------------------------------


def test_datasource_create_list_get_delete(db_client: TestClient):
    r = db_client.post("/api/datasources", json={"name": "help-center", "type": "text"})
    assert r.status_code == 201
    created = r.json()
    assert set(created) >= {"uuid", "name", "type", "created_at", "updated_at"}
    assert (created["name"], created["type"]) == ("help-center", "text")
    listed = db_client.get("/api/datasources").json()
    assert [d["uuid"] for d in listed] == [created["uuid"]]
    one = db_client.get(f"/api/datasources/{created['uuid']}").json()
    assert one["entries"] == {} and one["name"] == "help-center"
    assert db_client.delete(f"/api/datasources/{created['uuid']}").status_code == 204
    assert db_client.get("/api/datasources").json() == []
    r = db_client.get(f"/api/datasources/{created['uuid']}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "DATASOURCE_NOT_FOUND"
    assert db_client.delete(f"/api/datasources/{created['uuid']}").status_code == 404


def test_datasource_create_errors(db_client: TestClient):
    _datasource(db_client, "same")
    r = db_client.post("/api/datasources", json={"name": "same", "type": "text"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "DATASOURCE_EXISTS"
    r = db_client.post("/api/datasources", json={"name": "x", "type": "video"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = db_client.post(
        "/api/datasources",
        json={"name": "x", "type": "text", "chunk_size": 100, "chunk_overlap": 100},
    )
    assert r.status_code == 422
    r = db_client.post(
        "/api/datasources", json={"name": "x", "type": "text"}, headers={"Authorization": ""}
    )
    assert r.status_code == 401


# --- entries -------------------------------------------------------------------


def test_entry_text_is_pending_then_ready_and_searchable(db_client: TestClient):
    ds = _datasource(db_client)
    r = _add(
        db_client,
        ds,
        {"product": "lamp", "year": 2024},
        name="refunds",
        content="Refunds take five days.",
    )
    assert r.status_code == 201
    assert r.json()["status"] in ("pending", "processing")
    entry = wait_for_entry(db_client, ds, r.json()["uuid"])
    assert entry["status"] == "ready"
    assert entry["chunks_total"] == entry["chunks_done"] == 1
    assert entry["entry_metadata"] == {"product": "lamp", "year": 2024}
    assert [e["uuid"] for e in db_client.get(f"/api/datasources/{ds}/entries").json()] == [
        entry["uuid"]
    ]
    hits = db_client.post(
        f"/api/datasources/{ds}/search", json={"query": "how long for a refund?"}
    ).json()["results"]
    assert hits[0]["id"] == f"{entry['uuid']}:0"
    assert hits[0]["text"] == "Refunds take five days."
    assert 0.3 < hits[0]["score"] <= 1.0
    assert hits[0]["metadata"] == {
        "md_product": "lamp",
        "md_year": 2024,
        "source": "refunds",
        "entry_uuid": entry["uuid"],
        "datasource_uuid": ds,
        "name": "refunds",
    }
    assert db_client.get(f"/api/datasources/{ds}").json()["entries"] == {"ready": 1}


def test_entry_delete_removes_vectors_and_file(db_client: TestClient, settings: Settings):
    ds = _datasource(db_client, type="file")
    entry = _ready(db_client, ds, name="a.txt", file=base64.b64encode(b"alpha beta gamma").decode())
    assert _vectors(db_client, ds, entry["uuid"]) == 1
    files = list((settings.home / "files").rglob("*"))
    assert any(p.is_file() for p in files)
    assert db_client.delete(f"/api/datasources/{ds}/entries/{entry['uuid']}").status_code == 204
    assert _vectors(db_client, ds) == 0
    assert not any(p.is_file() for p in (settings.home / "files").rglob("*"))
    r = db_client.get(f"/api/datasources/{ds}/entries/{entry['uuid']}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "ENTRY_NOT_FOUND"
    assert db_client.delete(f"/api/datasources/{ds}/entries/{entry['uuid']}").status_code == 404


def test_datasource_delete_removes_all_vectors_and_files(db_client: TestClient, settings: Settings):
    ds = _datasource(db_client)
    _ready(db_client, ds, name="t", content="one text")
    _ready(db_client, ds, name="f.txt", file=base64.b64encode(b"a file").decode())
    assert _vectors(db_client, ds) == 2
    assert db_client.delete(f"/api/datasources/{ds}").status_code == 204
    assert _vectors(db_client, ds) == 0
    assert not (settings.home / "files" / ds).exists()
    assert db_client.get(f"/api/datasources/{ds}/entries").status_code == 404


def test_entry_duplicate_content_is_409_naming_the_existing_entry(db_client: TestClient):
    ds = _datasource(db_client)
    first = _add(db_client, ds, name="a", content="same words").json()
    r = _add(db_client, ds, name="b", content="same words")
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "DUPLICATE_ENTRY"
    assert error["details"]["entry_uuid"] == first["uuid"]
    assert len(db_client.get(f"/api/datasources/{ds}/entries").json()) == 1


@pytest.mark.parametrize(
    ("ds_type", "data", "code"),
    [
        ("mixed", {"name": "x"}, "ENTRY_INVALID"),
        ("mixed", {"name": "x", "content": "a", "url": "http://example.com/"}, "ENTRY_INVALID"),
        ("text", {"name": "x", "url": "http://example.com/"}, "ENTRY_INVALID"),
        ("url", {"name": "x", "content": "words"}, "ENTRY_INVALID"),
        ("file", {"name": "x", "file": "not base64!!"}, "ENTRY_INVALID"),
        ("mixed", {"name": "x", "content": "   "}, "ENTRY_INVALID"),
        ("url", {"name": "x", "url": "http://169.254.169.254/latest/"}, "URL_REFUSED"),
        ("url", {"name": "x", "url": "http://127.0.0.1:9/"}, "URL_REFUSED"),
        ("url", {"name": "x", "url": "ftp://example.com/x"}, "URL_REFUSED"),
    ],
)
def test_entry_invalid_is_422(client: TestClient, ds_type: str, data: dict[str, Any], code: str):
    ds = _datasource(client, type=ds_type)
    r = _add(client, ds, **data)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, None])
def test_entry_metadata_must_be_scalar_naming_the_key(client: TestClient, value: Any):
    ds = _datasource(client)
    r = _add(client, ds, {"ok": 1, "tags": value}, name="x", content="words")
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "METADATA_INVALID"
    assert error["details"]["key"] == "tags" and "'tags'" in error["message"]


def test_entry_oversize_is_413(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"max_entry_bytes": 100, "max_file_bytes": 100}))
    ds = _datasource(client)
    for data in ({"content": "x" * 101}, {"file": base64.b64encode(b"y" * 101).decode()}):
        r = _add(client, ds, name="big", **data)
        assert r.status_code == 413 and r.json()["error"]["code"] == "ENTRY_TOO_LARGE"
    r = client.post(
        f"/api/datasources/{ds}/entries/upload", files={"file": ("big.txt", b"z" * 101)}
    )
    assert r.status_code == 413


def test_entry_for_missing_datasource_is_404(client: TestClient):
    r = _add(client, "00000000-0000-0000-0000-000000000000", name="x", content="y")
    assert r.status_code == 404 and r.json()["error"]["code"] == "DATASOURCE_NOT_FOUND"


def test_entry_pdf_base64_and_docx_upload(client: TestClient):
    ds = _datasource(client, type="file")
    pdf = make_pdf("The warranty covers the motor for five years.")
    entry = _ready(
        client, ds, {"kind": "policy"}, name="warranty.pdf", file=base64.b64encode(pdf).decode()
    )
    assert entry["type"] == "file" and entry["size_bytes"] == len(pdf)
    docx = make_docx("Batteries are replaced for free in the first year.")
    r = client.post(
        f"/api/datasources/{ds}/entries/upload",
        files={"file": ("batteries.docx", docx)},
        data={"entry_metadata": '{"kind": "faq"}'},
    )
    assert r.status_code == 201, r.text
    uploaded = wait_for_entry(client, ds, r.json()["uuid"])
    assert uploaded["status"] == "ready" and uploaded["name"] == "batteries.docx"
    hits = client.post(
        f"/api/datasources/{ds}/search",
        json={"query": "battery replacement", "where": {"md_kind": "faq"}},
    ).json()["results"]
    assert [h["metadata"]["source"] for h in hits] == ["batteries.docx"]
    assert "Batteries are replaced" in hits[0]["text"]
    r = client.post(
        f"/api/datasources/{ds}/entries/upload",
        files={"file": ("x.txt", b"a")},
        data={"entry_metadata": "[1]"},
    )
    assert r.status_code == 422


def test_entry_broken_file_fails_with_error_text(client: TestClient):
    ds = _datasource(client, type="file")
    r = _add(client, ds, name="broken.pdf", file=base64.b64encode(b"%PDF-1.4 garbage").decode())
    entry = wait_for_entry(client, ds, r.json()["uuid"])
    assert entry["status"] == "failed"
    assert entry["error"].startswith("EXTRACT_FAILED:")


def test_entry_url_fetched_from_allowlisted_server(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    client = make_client(make_settings(datasources={"url_allowlist": ["127.0.0.1"]}))
    ds = _datasource(client, type="url")
    url = pages.add(
        "/hours.html", b"<html><body><h1>Hours</h1><p>We open at nine.</p></body></html>"
    )
    entry = _ready(client, ds, name="hours", url=url)
    hits = client.post(f"/api/datasources/{ds}/search", json={"query": "opening time"}).json()[
        "results"
    ]
    assert hits[0]["metadata"]["source"] == url
    assert "We open at nine." in hits[0]["text"] and "<" not in hits[0]["text"]
    # A redirect to a private address is refused when the worker fetches it.
    bad = pages.redirect("/sneaky", "http://10.9.8.7/")
    r = _add(client, ds, name="sneaky", url=bad)
    failed = wait_for_entry(client, ds, r.json()["uuid"])
    assert failed["status"] == "failed" and failed["error"].startswith("URL_REFUSED:")
    assert entry["status"] == "ready"


def test_entry_chunking_per_datasource(client: TestClient):
    ds = _datasource(client, chunk_size=100, chunk_overlap=20)
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    entry = _ready(client, ds, name="long", content=text)
    assert entry["chunks_total"] > 5
    assert _vectors(client, ds, entry["uuid"]) == entry["chunks_total"]


# --- search --------------------------------------------------------------------


def test_search_where_filters_and_top_k(db_client: TestClient):
    ds = _datasource(db_client)
    for i, lang in enumerate(["en", "de", "en"]):
        _ready(
            db_client,
            ds,
            {"lang": lang, "n": i},
            name=f"doc{i}",
            content=f"Document {i} about shipping.",
        )
    search = f"/api/datasources/{ds}/search"
    results = db_client.post(search, json={"query": "shipping", "where": {"md_lang": "en"}}).json()[
        "results"
    ]
    assert sorted(h["metadata"]["name"] for h in results) == ["doc0", "doc2"]
    body = {"query": "shipping", "where": {"$or": [{"md_n": {"$gte": 2}}, {"md_lang": "de"}]}}
    results = db_client.post(search, json=body).json()["results"]
    assert sorted(h["metadata"]["name"] for h in results) == ["doc1", "doc2"]
    assert (
        len(db_client.post(search, json={"query": "shipping", "top_k": 1}).json()["results"]) == 1
    )
    scores = [
        h["score"] for h in db_client.post(search, json={"query": "shipping"}).json()["results"]
    ]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    "where",
    [{"lang": "en"}, {"md_n": {"$gt": "x"}}, {"md_n": {"$regex": "a"}}, {"$or": []}, {"md_a": [1]}],
)
def test_search_invalid_filter_is_422(client: TestClient, where: dict[str, Any]):
    ds = _datasource(client)
    r = client.post(f"/api/datasources/{ds}/search", json={"query": "x", "where": where})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "FILTER_INVALID"


def test_search_missing_datasource_is_404_and_empty_is_empty(client: TestClient):
    r = client.post("/api/datasources/nope/search", json={"query": "x"})
    assert r.status_code == 404
    ds = _datasource(client)
    assert client.post(f"/api/datasources/{ds}/search", json={"query": "x"}).json() == {
        "results": []
    }


# --- the retrieve step -----------------------------------------------------------


def test_support_bot_answers_from_pdf_html_and_text_citing_sources(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    client = make_client(make_settings(datasources={"url_allowlist": ["127.0.0.1"]}))
    ds = _datasource(client, "help-center", "mixed")
    pdf = make_pdf("Refund policy: refunds are paid back within 14 days of the return.")
    url = pages.add(
        "/shipping.html",
        b"<html><body><h1>Shipping</h1>"
        b"<p>Parcels ship within two days by courier.</p></body></html>",
    )
    _ready(
        client, ds, {"product": "store"}, name="refunds.pdf", file=base64.b64encode(pdf).decode()
    )
    _ready(client, ds, {"product": "store"}, name="shipping", url=url)
    _ready(
        client,
        ds,
        {"product": "store"},
        name="opening-hours",
        content="The shop opens at 9 am on weekdays.",
    )
    # The example as shipped, but a short answer: the test checks the sources and that
    # an answer came, and each token of the local model costs time on a loaded machine.
    shipped = (EXAMPLES / "support-bot.yaml").read_text()
    yaml_text = shipped.replace("max_tokens: 200}", "max_tokens: 8}")
    assert yaml_text != shipped
    r = client.post("/api/apps", content=yaml_text, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    app = r.json()["uuid"]
    r = client.post(
        f"/api/apps/{app}/run", json={"input": {"question": "How long until my refund is paid?"}}
    )
    assert r.status_code == 200, r.text
    output = r.json()["output"]
    assert set(output["sources"]) == {"refunds.pdf", url, "opening-hours"}
    assert output["sources"][0] == "refunds.pdf"
    assert isinstance(output["answer"], str) and output["answer"]
    # A product filter that matches nothing leaves no documents.
    r = client.post(
        f"/api/apps/{app}/run", json={"input": {"question": "refund?", "product": "other"}}
    )
    assert r.json()["output"]["sources"] == []


def test_app_with_datasource_by_uuid_and_min_score(client: TestClient):
    ds = _datasource(client, "kb")
    _ready(client, ds, name="cats", content="Cats sleep sixteen hours a day.")
    _ready(client, ds, name="tax", content="Quarterly VAT returns are due on the tenth.")
    text = (
        f"name: R\nsteps:\n  - id: docs\n    kind: retrieve\n    datasources: [{ds}]\n"
        "    query: '{{ input.q }}'\n    top_k: 2\n    mode: vector\n    min_score: 0.4\n"
        "input:\n  q: {type: string}\noutput:\n  sources: '{{ docs.sources }}'\n"
        "  top: '{{ docs.documents[0].score }}'\n"
    )
    r = client.post("/api/apps", content=text, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    out = client.post(
        f"/api/apps/{r.json()['uuid']}/run", json={"input": {"q": "how long do cats sleep"}}
    ).json()
    assert out["output"]["sources"] == ["cats"]
    assert out["output"]["top"] > 0.4
    # The stored run keeps the rendered query and what was found, with its text.
    [step] = client.get(f"/api/runs/{out['run']['id']}").json()["steps"]
    assert (step["query"], step["count"]) == ("how long do cats sleep", 1)
    [found] = step["documents"]
    assert found["id"].endswith(":0") and found["source"] == "cats"
    assert found["score"] == out["output"]["top"]
    assert found["text"] == "Cats sleep sixteen hours a day."
    assert found["metadata"]["datasource_uuid"] == ds


def test_entry_retry_after_a_failure(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    client = make_client(make_settings(datasources={"url_allowlist": ["127.0.0.1"]}))
    ds = _datasource(client, type="url")
    url = pages.base + "/later.html"  # not served yet: the fetch fails with 404
    r = _add(client, ds, name="later", url=url)
    entry = r.json()["uuid"]
    failed = wait_for_entry(client, ds, entry)
    assert failed["status"] == "failed" and failed["error"]
    pages.add("/later.html", b"<html><body><p>Now it is here.</p></body></html>")
    retried = client.post(f"/api/datasources/{ds}/entries/{entry}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] in ("pending", "processing", "ready")
    ready = wait_for_entry(client, ds, entry)
    assert ready["status"] == "ready" and ready["error"] is None
    assert _vectors(client, ds, entry) == ready["chunks_total"] > 0
    missing = client.post(f"/api/datasources/{ds}/entries/nope/retry")
    assert missing.status_code == 404


def test_entry_retry_of_a_waiting_entry_is_409(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    # No ingestion worker in this process: the entry stays pending.
    client = make_client(make_settings(datasources={"workers": 0}))
    ds = _datasource(client)
    entry = _add(client, ds, name="waiting", content="Still in the queue.").json()["uuid"]
    r = client.post(f"/api/datasources/{ds}/entries/{entry}/retry")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "ENTRY_BUSY"
    assert client.get(f"/api/datasources/{ds}/entries/{entry}").json()["status"] == "pending"


# --- large files: multipart, streamed to disk, bounded by max_file_bytes ---------------

MB = 1024 * 1024
PUMP = "The pump must be primed with water before its first use, or the seal burns out."


def _stored_files(settings: Settings) -> list[Path]:
    return [p for p in (settings.home / "files").rglob("*") if p.is_file()]


def test_upload_over_max_file_bytes_is_413_and_nothing_stored(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
):
    settings = make_settings(datasources={"max_file_bytes": 3 * MB})
    client = make_client(settings)
    ds = _datasource(client, type="file")
    big = tmp_path / "big.pdf"
    big.write_bytes(make_padded_pdf([PUMP], 3 * MB + 100_000))
    # Over the file limit, within the upload's body limit: refused by the store.
    af = Client("http://testserver", client.headers["Authorization"].split()[1], http=client)
    with pytest.raises(InvalidRequestError) as info:
        af.upload_entry(ds, big)
    assert (info.value.status, info.value.code) == (413, "ENTRY_TOO_LARGE")
    assert "APPFORGE_DATASOURCES__MAX_FILE_BYTES" in info.value.message
    # Over the upload's body limit (file + max_body_bytes): refused before the route.
    huge = make_padded_pdf([PUMP], 6 * MB)
    r = client.post(f"/api/datasources/{ds}/entries/upload", files={"file": ("huge.pdf", huge)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert client.get(f"/api/datasources/{ds}/entries").json() == []
    assert _stored_files(settings) == []


def test_upload_above_the_old_limit_is_accepted_and_ingested(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
):
    """Files went base64 in a JSON body, over the 2 MiB body limit from ~1.5 MB on;
    the multipart upload takes them up to max_file_bytes (50 MiB by default)."""
    settings = make_settings()
    assert settings.datasources.max_file_bytes == 50 * MB
    client = make_client(settings)
    ds = _datasource(client, type="file")
    pdf = make_padded_pdf([PUMP, "Clean the intake filter every month."], 4 * MB)
    assert len(pdf) > settings.limits.max_body_bytes
    r = _add(client, ds, name="manual.pdf", file=base64.b64encode(pdf).decode())
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    path = tmp_path / "manual.pdf"
    path.write_bytes(pdf)
    af = Client("http://testserver", client.headers["Authorization"].split()[1], http=client)
    with path.open("rb") as opened:  # an open file streams as well as a path
        entry = af.upload_entry(ds, opened, metadata={"kind": "manual"})
    assert entry.name == "manual.pdf" and entry.size_bytes == len(pdf)
    ready = wait_for_entry(client, ds, entry.uuid)
    assert ready["status"] == "ready" and ready["chunks_total"] >= 1
    [stored] = _stored_files(settings)
    assert stored.read_bytes() == pdf
    hits = af.search(ds, "priming the pump", where={"md_kind": "manual"}).results
    assert hits and "primed with water" in hits[0].text
    # The same file again is the same content: 409, and its copy is not kept.
    r = client.post(f"/api/datasources/{ds}/entries/upload", files={"file": ("again.pdf", pdf)})
    assert r.status_code == 409 and r.json()["error"]["code"] == "DUPLICATE_ENTRY"
    assert _stored_files(settings) == [stored]


def test_upload_streamed_with_a_signed_token(client: TestClient):
    made = client.post(
        "/api/tokens", json={"name": "signer", "require_signature": True, "role": "editor"}
    ).json()
    ds = _datasource(client, type="file")
    af = Client(
        "http://testserver", made["token"], http=client, signing_secret=made["signing_secret"]
    )
    entry = af.upload_entry(ds, b"Signed uploads are hashed as they are read.", filename="s.txt")
    assert entry.name == "s.txt" and entry.size_bytes == 43
