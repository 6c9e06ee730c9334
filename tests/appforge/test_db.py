"""The database: migrations produce exactly the models' schema, on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from appforge.core.db import load_tables, make_engine, migrate, normalize_url


def test_migrations_match_models(backend: str | None, tmp_path: Path):
    url = backend or f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), load_tables())
    engine.dispose()
    assert diff == []


def test_sqlite_uses_wal_and_foreign_keys(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert "apps" in inspect(engine).get_table_names()
    engine.dispose()


def test_postgres_urls_use_psycopg3():
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def _migrate_in_child(url: str, barrier: Any) -> None:
    engine = make_engine(url)
    barrier.wait(timeout=60)  # all children start migrating at the same moment
    migrate(engine)
    engine.dispose()


def test_sqlite_migrations_from_several_processes_at_once(tmp_path: Path):
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'race.db'}"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    children = [ctx.Process(target=_migrate_in_child, args=(url, barrier)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [c.exitcode for c in children] == [0, 0, 0, 0]
    engine = make_engine(url)
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    engine.dispose()
    assert len(version) == 1
