"""Retrieval: vector, keyword and hybrid search with filters, the keyword index's rows,
page- and section-aware chunks, citations and conversation-aware queries."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai_v1 import V1
from sqlalchemy import text

from tests.datasources.support import wait_for_entry

FAQ = b"""# Store FAQ

Welcome to the tea shop's questions and answers.

## Shipping

Parcels leave the warehouse within two days.

## Warranty

### Kettles

Every kettle has a warranty of three years against limescale damage.

```
# not a heading: inside a code fence
```

## Returns

Unopened tea may be returned within thirty days.
"""


def _datasource(client: TestClient, name: str = "docs", **extra: Any) -> str:
    r = client.post("/api/datasources", json={"name": name, "type": "mixed", **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _ready(client: TestClient, ds: str, metadata: dict[str, Any] | None = None, **data: Any) -> Any:
    body: dict[str, Any] = {"entry_data": data, "entry_metadata": metadata or {}}
    r = client.post(f"/api/datasources/{ds}/entries", json=body)
    assert r.status_code == 201, r.text
    entry = wait_for_entry(client, ds, r.json()["uuid"])
    assert entry["status"] == "ready", entry
    return entry


def _search(client: TestClient, ds: str, **body: Any) -> list[dict[str, Any]]:
    r = client.post(f"/api/datasources/{ds}/search", json=body)
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def _keyword_rows(client: TestClient, ds: str, entry: str | None = None) -> int:
    app: Any = client.app
    return int(app.state.api.datasources.keywords.count(ds, entry))


def _pdf(*pages: str) -> bytes:
    """A real PDF with one page per text (fpdf2)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, page)
    return bytes(pdf.output())


def _pages(metadata: dict[str, Any]) -> list[int]:
    """The pages a chunk spans, from its ``pages`` ("3" or "3-4")."""
    first, _, last = metadata["pages"].partition("-")
    return list(range(int(first), int(last or first) + 1))


# --- modes and filters ------------------------------------------------------------


def _shop(client: TestClient) -> str:
    ds = _datasource(client)
    docs = [
        ("kettle-en", "en", "The XK-9 kettle boils a litre of water in ninety seconds."),
        ("kettle-de", "de", "Der Wasserkocher XK-9 kocht einen Liter in neunzig Sekunden."),
        ("teapot-en", "en", "A porcelain teapot keeps green tea warm for an hour."),
        ("shipping-en", "en", "Orders are shipped by courier within two working days."),
    ]
    for name, lang, content in docs:
        _ready(client, ds, {"lang": lang}, name=name, content=content)
    return ds


def test_search_modes_with_filters(db_client: TestClient):
    ds = _shop(db_client)
    assert db_client.get(f"/api/datasources/{ds}").json()["search_mode"] == "hybrid"
    for mode in ("vector", "keyword", "hybrid"):
        results = _search(db_client, ds, query="XK-9 kettle", mode=mode, top_k=2)
        assert results[0]["metadata"]["name"] in ("kettle-en", "kettle-de"), (mode, results)
        scores = [h["score"] for h in results]
        assert scores == sorted(scores, reverse=True)
        filtered = _search(db_client, ds, query="XK-9 kettle", mode=mode, where={"md_lang": "de"})
        assert [h["metadata"]["name"] for h in filtered] == ["kettle-de"], mode
        either = {"$or": [{"md_lang": "de"}, {"name": "teapot-en"}]}
        names = {h["metadata"]["name"] for h in _search(db_client, ds, query="tea", where=either)}
        assert names <= {"kettle-de", "teapot-en"}
    # Keyword search finds only chunks holding a word of the query (stemmed).
    keyword = _search(db_client, ds, query="which teapots?", mode="keyword")
    assert [h["metadata"]["name"] for h in keyword] == ["teapot-en"]
    assert _search(db_client, ds, query="zzz qqq", mode="keyword") == []
    # Hybrid scores are fused ranks: first in both lists is 1.
    top = _search(db_client, ds, query="porcelain teapot", mode="hybrid", keyword_weight=0.5)[0]
    assert top["metadata"]["name"] == "teapot-en" and top["score"] == pytest.approx(1.0)
    only_vector = _search(db_client, ds, query="porcelain teapot", mode="hybrid", keyword_weight=0)
    assert only_vector[0]["score"] <= 1.0


def test_search_mode_is_checked_and_old_datasources_keep_vector(client: TestClient):
    ds = _datasource(client, search_mode="vector")
    assert client.get(f"/api/datasources/{ds}").json()["search_mode"] == "vector"
    _ready(client, ds, name="a", content="Cast iron pans rust when left wet.")
    # The datasource's own mode: vector scores are cosine similarities.
    assert 0 < _search(client, ds, query="pan rust")[0]["score"] < 1
    for body in ({"mode": "fuzzy"}, {"keyword_weight": 2}):
        r = client.post(f"/api/datasources/{ds}/search", json={"query": "x", **body})
        assert r.status_code == 422, r.text
    r = client.post("/api/datasources", json={"name": "b", "type": "text", "search_mode": "x"})
    assert r.status_code == 422


def test_deleting_entries_and_datasources_leaves_no_keyword_rows(db_client: TestClient):
    ds = _datasource(db_client, chunk_size=60, chunk_overlap=0)
    long_text = " ".join(f"Paragraph {i} mentions zebrafish." for i in range(12))
    entry = _ready(db_client, ds, name="long", content=long_text)
    other = _ready(db_client, ds, name="short", content="Zebrafish live in rivers.")
    assert _keyword_rows(db_client, ds, entry["uuid"]) == entry["chunks_total"] > 1
    db_client.delete(f"/api/datasources/{ds}/entries/{entry['uuid']}")
    assert _keyword_rows(db_client, ds, entry["uuid"]) == 0
    hits = _search(db_client, ds, query="zebrafish", mode="keyword")
    assert [h["metadata"]["entry_uuid"] for h in hits] == [other["uuid"]]
    db_client.delete(f"/api/datasources/{ds}")
    app: Any = db_client.app
    store = app.state.api.datasources
    with store.db() as db:
        assert db.scalar(text("SELECT count(*) FROM datasource_chunks")) == 0
        if store.keywords.dialect == "sqlite":  # the FTS5 index forgot them too
            match = (
                "SELECT count(*) FROM datasource_chunks_fts "
                "WHERE datasource_chunks_fts MATCH 'zebrafish'"
            )
            assert db.scalar(text(match)) == 0


# --- pages and sections -------------------------------------------------------------


def test_pdf_chunks_carry_pages_and_markdown_chunks_sections(client: TestClient):
    ds = _datasource(client, chunk_size=200, chunk_overlap=0)
    pdf = _pdf(
        "Chapter one. The manual starts with unpacking the espresso machine.",
        "Chapter two. Descaling: run citric acid through the boiler monthly.",
        "Chapter three. " + "The grinder burrs need cleaning with a brush. " * 6,
        "Chapter four. Warranty claims need the receipt and serial number.",
    )
    _ready(client, ds, name="manual.pdf", file=base64.b64encode(pdf).decode())
    hit = _search(client, ds, query="descaling citric acid", top_k=1)[0]["metadata"]
    assert hit["page"] == _pages(hit)[0] and 2 in _pages(hit)
    chunks = _search(client, ds, query="chapter", mode="keyword", top_k=20)
    assert {p for h in chunks for p in _pages(h["metadata"])} == {1, 2, 3, 4}
    assert any(len(_pages(h["metadata"])) > 1 for h in chunks)  # one ran over a page break
    on_three = _search(client, ds, query="chapter", where={"page": {"$gte": 3}}, top_k=20)
    assert on_three and {h["metadata"]["page"] for h in on_three} <= {3, 4}

    md = base64.b64encode(FAQ).decode()
    _ready(client, ds, name="faq.md", file=md, media_type="text/markdown")
    warranty = _search(client, ds, query="kettle warranty limescale", top_k=1)[0]
    assert warranty["metadata"]["section"] == "Store FAQ > Warranty > Kettles"
    assert "not a heading" in warranty["text"]
    returns = _search(client, ds, query="x", where={"section": "Store FAQ > Returns"})
    assert [h["text"] for h in returns] == [
        "## Returns\n\nUnopened tea may be returned within thirty days."
    ]
    html = b"<html><body><h1>Guide</h1><p>Intro.</p><h2>Setup</h2><p>Plug it in.</p></body></html>"
    _ready(client, ds, name="guide.html", file=base64.b64encode(html).decode())
    setup = _search(client, ds, query="plug it in", mode="keyword", top_k=1)[0]
    assert setup["metadata"]["section"] == "Guide > Setup"


# --- citations and history -------------------------------------------------------------

CITING_APP = """\
version: 1
name: Cite
type: chat
input:
  question: {type: string, required: true}
steps:
  - id: docs
    kind: retrieve
    datasources: [kb]
    mode: keyword
    history: 2
    query: "{% for t in session.history %}{{ t.input.question }} {% endfor %}{{ input.question }}"
    top_k: 3
  - id: answer
    kind: llm
    prompt:
      system: |
        {% for d in docs.documents %}[{{ d.n }}] {{ d.text }}
        {% endfor %}
      user: "{{ input.question }}"
output:
  answer: "{{ answer.text }}"
  sources: "{{ answer.citations }}"
  documents: "{{ docs.documents | map(attribute='n') | list }}"
"""


def test_citations_map_markers_to_chunks_and_follow_ups_read_history(
    make_v1: Callable[..., V1],
):
    v1 = make_v1()
    client = v1.client
    ds = _datasource(client, "kb")
    green = _ready(client, ds, name="green", content="Green tea brews at 80 degrees.")
    _ready(client, ds, name="black", content="Black tea brews at 95 degrees.")
    oolong = _ready(client, ds, name="oolong", content="Oolong tea brews at 90 degrees.")
    r = client.post("/api/apps", content=CITING_APP, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    app = r.json()["uuid"]
    v1.answer("Brew it at 80 degrees [1].")
    first = client.post(f"/api/apps/{app}/run", json={"input": {"question": "green tea"}})
    assert first.status_code == 200, first.text
    out = first.json()["output"]
    assert out["documents"] == [1, 2, 3]
    [cited] = out["sources"]  # only what the answer cites
    assert cited["score"] > 0
    assert cited == {
        "n": 1,
        "id": f"{green['uuid']}:0",
        "source": "green",
        "page": None,
        "section": None,
        "score": cited["score"],
    }
    # A follow-up in the session: its query holds the earlier turn's question.
    session = first.json()["session"]["id"]
    v1.answer("Oolong: 90 degrees [2], unlike [1][2]; see also [9].")
    r = client.post(f"/api/apps/{app}/run/{session}", json={"input": {"question": "and oolong?"}})
    assert r.status_code == 200, r.text
    out = r.json()["output"]
    cited = {c["n"]: c for c in out["sources"]}
    assert list(cited) == [2, 1]  # first written first; [9] names no document
    documents = {d: c["id"] for d, c in cited.items()}
    assert f"{oolong['uuid']}:0" in documents.values()
    assert f"{green['uuid']}:0" in documents.values()
    run = client.get(f"/api/runs/{r.json()['run']['id']}").json()
    query = next(s for s in run["steps"] if s["id"] == "docs")["query"]
    assert query == "green tea and oolong?"
