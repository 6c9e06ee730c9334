"""Filters of any size, from the search endpoint and from a public app's templated
``where``: answered 200 or 422, never 500, and the process lives on."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hostile_docs import templated_filter_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import poll_until

NOBODY = {"Authorization": ""}
VALUES = st.one_of(st.integers(-5, 5), st.sampled_from(["en", "de", "fr"]), st.booleans())
LEAF = st.fixed_dictionaries(
    {"md_lang": st.one_of(VALUES, st.fixed_dictionaries({"$in": st.lists(VALUES, max_size=3)}))}
)


@pytest.fixture
def searchable(client: TestClient) -> tuple[TestClient, str]:
    """The API with one datasource holding one ready entry."""
    ds = client.post("/api/datasources", json={"name": "langs", "type": "text"}).json()["uuid"]
    entry = {"entry_data": {"name": "a", "content": "Hello in English."}}
    entry["entry_metadata"] = {"lang": "en"}  # type: ignore[assignment]
    assert client.post(f"/api/datasources/{ds}/entries", json=entry).status_code == 201

    def ready() -> bool:
        return bool(client.get(f"/api/datasources/{ds}/entries").json()[0]["status"] == "ready")

    poll_until(ready)
    return client, ds


def _nested(depth: int, width: int) -> dict[str, Any]:
    node: dict[str, Any] = {"md_lang": "en"}
    for _ in range(depth):
        node = {"$or": [node] * width}
    return node


# Filters small and huge: many clauses, long $in lists, deep nesting, wide fan-outs.
FILTERS = st.one_of(
    st.recursive(LEAF, lambda inner: st.fixed_dictionaries({"$or": st.lists(inner, min_size=1)})),
    st.integers(1, 12_000).map(lambda n: {"$or": [{"md_lang": i} for i in range(n)]}),
    st.integers(1, 120_000).map(lambda n: {"md_lang": {"$in": list(range(n))}}),
    st.integers(1, 60).map(lambda depth: _nested(depth, 1)),
    st.tuples(st.integers(1, 9), st.integers(2, 3)).map(lambda dw: _nested(*dw)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(where=FILTERS)
def test_search_with_filters_of_any_size_is_200_or_422(
    searchable: tuple[TestClient, str], where: dict[str, Any]
):
    client, ds = searchable
    r = client.post(f"/api/datasources/{ds}/search", json={"query": "hi", "where": where})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert r.json()["error"]["code"] in ("FILTER_INVALID", "VALIDATION_ERROR")
    assert client.get("/api/health").status_code == 200


def test_public_app_templated_filter_is_bounded(searchable: tuple[TestClient, str]):
    client, ds = searchable
    app = templated_filter_app(ds)
    made = client.post("/api/apps", content=app, headers={"Content-Type": "application/yaml"})
    assert made.status_code == 201, made.text
    url = f"/api/apps/{made.json()['uuid']}/run"
    huge = [{"md_lang": f"l{i}"} for i in range(10_000)]
    r = client.post(url, json={"input": {"langs": huge}}, headers=NOBODY)
    assert r.status_code == 422 and r.json()["error"]["code"] == "FILTER_INVALID", r.text
    small = client.post(url, json={"input": {"langs": [{"md_lang": "en"}]}}, headers=NOBODY)
    assert small.status_code == 200, small.text
