"""Filters: translation, 422 on invalid ones, and a property test against real Chroma."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasources.errors import FilterInvalidError
from datasources.filters import FilterLimits, holds, translate
from datasources.index import VectorIndex, make_client


def test_translate_equality_and_several_keys():
    assert translate({"md_lang": "en"}) == {"md_lang": {"$eq": "en"}}
    assert translate({"md_lang": "en", "md_year": {"$gte": 2020, "$lt": 2024}}) == {
        "$and": [
            {"md_lang": {"$eq": "en"}},
            {"md_year": {"$gte": 2020}},
            {"md_year": {"$lt": 2024}},
        ]
    }
    assert translate({"$or": [{"source": "a"}]}) == {"source": {"$eq": "a"}}
    assert translate(None) is None and translate({}) is None


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ({"lang": "en"}, "where.lang"),
        ({"md_lang": {"$regex": "e"}}, "where.md_lang.$regex"),
        ({"md_year": {"$gt": "2020"}}, "where.md_year.$gt"),
        ({"md_tag": {"$in": []}}, "where.md_tag.$in"),
        ({"md_tag": {"$in": ["a", 1]}}, "where.md_tag.$in"),
        ({"md_tag": ["a"]}, "where.md_tag"),
        ({"$and": {"md_a": 1}}, "where.$and"),
        ({"$or": [{"md_a": {"$eq": {"x": 1}}}]}, "where.$or[0].md_a.$eq"),
        ({"$not": {"md_a": 1}}, "where.$not"),
        ({"md_a": {}}, "where.md_a"),
    ],
)
def test_translate_refuses_invalid_filters_naming_the_path(where: dict[str, Any], path: str):
    with pytest.raises(FilterInvalidError) as info:
        translate(where)
    assert info.value.status_code == 422
    assert info.value.details["path"] == path


# --- property: Chroma's answer equals a plain-Python evaluation ---------------

KEYS = ("md_color", "md_size", "md_flag")
COLORS = ["red", "green", "blue"]
ENTRIES = [
    {"md_color": COLORS[i % 3], "md_size": (i * 7) % 10, "md_flag": i % 4 == 0} for i in range(24)
]


def _value(key: str) -> st.SearchStrategy[Any]:
    if key == "md_color":
        return st.sampled_from([*COLORS, "black"])
    if key == "md_size":
        return st.integers(-1, 11)
    return st.booleans()


@st.composite
def _leaf(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from(KEYS))
    ops = ["$eq", "$ne", "$in", "$nin", "plain"] + (
        ["$gt", "$gte", "$lt", "$lte"] if key == "md_size" else []
    )
    op = draw(st.sampled_from(ops))
    if op == "plain":
        return {key: draw(_value(key))}
    if op in ("$in", "$nin"):
        return {key: {op: draw(st.lists(_value(key), min_size=1, max_size=3))}}
    return {key: {op: draw(_value(key))}}


FILTERS = st.recursive(
    _leaf(),
    lambda inner: st.builds(
        lambda op, items: {op: items},
        st.sampled_from(["$and", "$or"]),
        st.lists(inner, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


def _same(a: Any, b: Any) -> bool:
    return bool(a == b and type(a) is type(b))


def _op(op: str, have: Any, operand: Any) -> bool:
    if op == "$eq":
        return _same(have, operand)
    if op == "$ne":
        return not _same(have, operand)
    if op == "$in":
        return any(_same(have, o) for o in operand)
    if op == "$nin":
        return not any(_same(have, o) for o in operand)
    return bool(
        {"$gt": have > operand, "$gte": have >= operand, "$lt": have < operand}.get(
            op, have <= operand
        )
    )


def _holds(where: dict[str, Any], meta: dict[str, Any]) -> bool:
    """The plain-Python meaning of a filter on one chunk's metadata."""
    results = []
    for key, value in where.items():
        if key == "$and":
            results.append(all(_holds(w, meta) for w in value))
        elif key == "$or":
            results.append(any(_holds(w, meta) for w in value))
        elif not isinstance(value, dict):
            results.append(_same(meta[key], value))
        else:
            results.extend(_op(op, meta[key], operand) for op, operand in value.items())
    return all(results)


@pytest.fixture(scope="module")
def filled_index(tmp_path_factory: pytest.TempPathFactory) -> VectorIndex:
    path: Path = tmp_path_factory.mktemp("chroma")
    index = VectorIndex(make_client(None, path))
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ENTRIES), 8)).astype(np.float32)
    index.add(
        "prop",
        [f"e{i}:0" for i in range(len(ENTRIES))],
        vectors,
        [f"text {i}" for i in range(len(ENTRIES))],
        [{**m, "entry_uuid": f"e{i}"} for i, m in enumerate(ENTRIES)],
    )
    return index


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(where=FILTERS)
def test_filter_results_equal_python_evaluation(filled_index: VectorIndex, where: dict[str, Any]):
    collection = filled_index._collection("prop", create=False)
    got = set(collection.get(where=translate(where), include=[])["ids"])
    expected = {f"e{i}:0" for i, meta in enumerate(ENTRIES) if _holds(where, meta)}
    assert got == expected
    # The keyword search's own evaluator of a translated filter agrees.
    kept = {f"e{i}:0" for i, meta in enumerate(ENTRIES) if holds(translate(where), meta)}
    assert kept == expected


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"md_a": 1}
    for n in range(levels):
        node = {"$and" if n % 2 else "$or": [node]}
    return node


@pytest.mark.parametrize(
    ("where", "limit"),
    [
        ({"$or": [{"md_a": i} for i in range(101)]}, "clauses"),
        ({"md_a": {"$in": list(range(1001))}}, "values"),
        ({"md_a": {"$nin": ["x"] * 1001}}, "values"),
        ({"md_a": {"$gt": 1, "$lt": 5}, "$and": [{"md_b": i} for i in range(99)]}, "clauses"),
        (_deep(9), "depth"),
        ({"md_a": "x" * 70_000}, "bytes"),
    ],
)
def test_translate_refuses_filters_over_a_limit(where: dict[str, Any], limit: str):
    with pytest.raises(FilterInvalidError) as info:
        translate(where)
    assert info.value.status_code == 422
    assert info.value.details["limit"] == limit
    assert "too large" in info.value.message


def test_translate_accepts_filters_at_the_limits():
    assert translate({"$or": [{"md_a": i} for i in range(100)]}) is not None
    assert translate({"md_a": {"$in": list(range(1000))}}) is not None
    assert translate(_deep(8)) is not None
    limits = FilterLimits(clauses=3, values=2, depth=1, bytes=1000)
    assert translate({"md_a": 1, "$or": [{"md_b": 1}, {"md_b": 2}]}, limits) is not None
    with pytest.raises(FilterInvalidError):
        translate({"md_a": 1, "$or": [{"md_b": 1}, {"md_b": 2}, {"md_b": 3}]}, limits)


def test_holds_treats_missing_keys_and_types_like_chroma():
    meta = {"md_n": 1, "md_flag": True, "md_s": "1"}
    assert holds(translate({"md_n": 1.0}), meta)
    assert not holds(translate({"md_flag": 1}), meta)
    assert not holds(translate({"md_s": 1}), meta)
    assert not holds(translate({"page": 2}), meta)
    assert holds(translate({"page": {"$ne": 2}}), meta)
    assert holds(translate({"page": {"$nin": [2]}}), meta)
    assert not holds(translate({"md_s": {"$gt": 0}}), meta)
    assert holds(None, meta)
