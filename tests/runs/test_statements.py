"""runs.statements: Core statements run on the driver's cursor read and write what
SQLAlchemy would, on SQLite and PostgreSQL, in the connection's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from appforge.core.db import Base, make_engine
from runs.statements import Lean
from runs.tables import App, Run

_APP_COLUMNS = ("uuid", "name", "description", "type", "public", "version", "yaml", "document")
_APP_COLUMNS += ("created_at", "updated_at")
_NEW_APP = Lean(insert(App), _APP_COLUMNS)
_READ_APP = Lean(
    select(App.public, App.document, App.created_at, App.version).where(
        App.uuid == bindparam("b_app")
    )
)
_WHEN = datetime(2026, 11, 30, 12, 0, 0, 0, tzinfo=UTC)  # no microseconds: a format edge


@pytest.fixture
def engine(backend: str | None, tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(backend or f"sqlite:///{tmp_path / 'lean.sqlite'}")
    if backend is None:  # PostgreSQL's is migrated; here the two tables will do
        Base.metadata.create_all(engine, tables=[App.__table__, Run.__table__])
    yield engine
    engine.dispose()


def _app(uuid: str, public: bool = True) -> dict[str, object]:
    return {
        "uuid": uuid,
        "name": "lean",
        "description": "",
        "type": "text",
        "public": public,
        "version": 3,
        "yaml": "version: 1",
        "document": {"name": "lean", "nested": [1, "é", None]},
        "created_at": _WHEN,
        "updated_at": _WHEN,
    }


def test_lean_rows_read_back_like_core(engine: Engine) -> None:
    with engine.connect() as conn:
        assert _NEW_APP.run(conn, _app("a1")) == 1
        conn.commit()
    with engine.connect() as conn:
        core = conn.execute(_READ_APP.statement, {"b_app": "a1"}).one()
        lean = _READ_APP.first(conn, {"b_app": "a1"})
        missing = _READ_APP.first(conn, {"b_app": "nope"})
    assert lean == tuple(core)
    assert lean == (True, {"name": "lean", "nested": [1, "é", None]}, _WHEN, 3)
    assert missing is None


def test_lean_compares_datetimes_as_core_stores_them(engine: Engine) -> None:
    """A run written through Core is found by a Lean query comparing its created_at."""
    with engine.begin() as conn:
        _NEW_APP.run(conn, _app("a2"))
        values = {"id": "r1", "app_uuid": "a2", "app_version": 1, "session_id": "s"}
        values.update(status="running", stream=False, input={}, output={}, steps=[], usage={})
        conn.execute(insert(Run).values(**values, created_at=_WHEN))
    since = Lean(select(Run.id).where(Run.created_at > bindparam("b_since")))
    with engine.connect() as conn:
        assert since.rows(conn, {"b_since": datetime(2026, 11, 30, 11, 59, tzinfo=UTC)}) == [
            ("r1",)
        ]
        assert since.rows(conn, {"b_since": _WHEN}) == []


def test_lean_writes_join_the_transaction(engine: Engine) -> None:
    with engine.connect() as conn:
        _NEW_APP.run(conn, _app("gone"))
        conn.rollback()
        _NEW_APP.run(conn, _app("kept", public=False))
        conn.commit()
    with engine.connect() as conn:
        assert _READ_APP.first(conn, {"b_app": "gone"}) is None
        kept = _READ_APP.first(conn, {"b_app": "kept"})
    assert kept is not None and kept[0] is False


def test_lean_driver_errors_are_sqlalchemy_errors(engine: Engine) -> None:
    with engine.connect() as conn:
        _NEW_APP.run(conn, _app("twice"))
        with pytest.raises(IntegrityError):
            _NEW_APP.run(conn, _app("twice"))


def test_lean_refuses_an_insert_that_needs_python_defaults(engine: Engine) -> None:
    partial = Lean(insert(App), ("uuid", "name", "type", "yaml", "document"))
    with engine.connect() as conn, pytest.raises(ValueError, match="every column"):
        partial.run(conn, {"uuid": "x", "name": "x", "type": "text", "yaml": "", "document": {}})
