"""The database: migrations produce exactly the models' schema, on both backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from ports import silent_port
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from appforge.core.db import (
    CONNECTION_DEFAULTS,
    PING_AFTER_IDLE_SECONDS,
    include_object,
    load_tables,
    make_engine,
    migrate,
    normalize_url,
    ping_idle_connections,
    unavailable,
    utcnow,
)
from appforge.core.keys import ServerKey


def test_migrations_match_models(backend: str | None, tmp_path: Path):
    url = backend or f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        tables = load_tables()
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        diff = compare_metadata(context, tables)
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


def test_a_silent_database_host_is_refused_in_time_not_waited_for():
    """A host that takes the connection and never answers (a hung server, a proxy
    whose backend is gone) made every request wait for the OS; connections now give up
    after CONNECTION_DEFAULTS' connect_timeout, or the URL's own connect_timeout."""
    with silent_port() as port:
        default = make_engine(f"postgresql://u@127.0.0.1:{port}/db")
        for name, value in CONNECTION_DEFAULTS.items():  # keepalives too
            assert default.url.query[name] == str(value)
        engine = make_engine(f"postgresql://u@127.0.0.1:{port}/db?connect_timeout=1")
        with pytest.raises(OperationalError) as raised, engine.connect():
            pass
        assert unavailable(raised.value) is not None  # an outage: the API's 503
        engine.dispose()
        default.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill_backend(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.postgres
def test_postgres_idle_connection_pinged_and_replaced_busy_one_not_pinged(postgres_url: str):
    now = [0.0]
    engine = create_engine(normalize_url(postgres_url), pool_size=1, max_overflow=0)
    ping_idle_connections(engine, 2.0, clock=lambda: now[0])
    try:
        # Back in the pool a moment ago: used without a ping, so its death shows.
        _kill_backend(postgres_url, _backend_pid(engine))
        now[0] += 1.0
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        # Idle past the threshold: pinged, found dead and replaced before use.
        first = _backend_pid(engine)
        _kill_backend(postgres_url, first)
        now[0] += 5.0
        assert _backend_pid(engine) != first
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_engine_replaces_connection_that_died_while_idle(postgres_url: str):
    engine = make_engine(postgres_url)
    try:
        first = _backend_pid(engine)
        _kill_backend(postgres_url, first)
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)  # at least this idle; longer is the same
        assert _backend_pid(engine) != first
    finally:
        engine.dispose()


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


@pytest.fixture
def fresh_url(backend: str | None, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database (no tables) on each backend."""
    if backend is None:
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    url: str = request.getfixturevalue("empty_postgres")
    return url


def test_token_roles_migration_keeps_existing_tokens_working(fresh_url: str):
    from alembic import command

    from api.auth import authenticate
    from appforge.core.db import alembic_config, session_factory

    key = ServerKey("test-server-key-for-the-roles-migration", "test")

    engine = make_engine(fresh_url)
    with engine.begin() as conn:  # the schema as it was before roles
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
    old = {"af_old_admin_token_000": True, "af_old_user_token_0000": False}
    with engine.begin() as conn:
        for n, (value, admin) in enumerate(old.items()):
            conn.execute(
                text(
                    "INSERT INTO tokens (id, name, token_hash, prefix, is_admin, "
                    "require_signature, created_at) VALUES (:id, :name, :hash, :prefix, "
                    ":admin, false, :now)"
                ),
                {
                    "id": f"t{n}", "name": f"old {n}", "hash": key.legacy_hash(value),
                    "prefix": value[:10], "admin": admin, "now": utcnow(),
                },
            )  # fmt: skip
    migrate(engine, key)
    factory = session_factory(engine)
    admin, user = (authenticate(factory, value, key) for value in old)
    engine.dispose()
    assert admin is not None and (admin.role, admin.is_admin, admin.apps) == ("admin", True, None)
    assert user is not None and (user.role, user.is_admin) == ("editor", False)


def test_secrets_migration_encrypts_plain_secrets_and_keeps_them_usable(fresh_url: str):
    from legacy_home import make_legacy_database

    from api.auth import authenticate
    from appforge.core.db import session_factory

    legacy = make_legacy_database(fresh_url, "http://127.0.0.1:9/hook")
    key = ServerKey("test-server-key-for-the-secrets-migration", "test")
    engine = make_engine(fresh_url)
    migrate(engine, key)
    with engine.connect() as conn:
        tokens = dict(conn.execute(text("SELECT id, signing_secret FROM tokens")).all())
        hook = conn.execute(text("SELECT secret FROM webhooks")).scalar_one()
        schemes = set(conn.execute(text("SELECT hash_scheme FROM tokens")).scalars())
    assert tokens["t-editor"] is None
    stored = [tokens["t-signed"], hook]
    assert all(s.startswith("fernet:") for s in stored)
    assert legacy.signing_secret not in str(stored) and legacy.webhook_secret not in str(stored)
    assert key.decrypt(hook) == legacy.webhook_secret
    assert schemes == {"sha256"}  # upgraded on first use: the token is needed for that

    factory = session_factory(engine)
    signed = authenticate(factory, legacy.signed_token, key)
    assert signed is not None and signed.signing_secret == legacy.signing_secret
    again = authenticate(factory, legacy.signed_token, key)  # now by its keyed hash
    assert again is not None and again.id == "t-signed"
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT token_hash, hash_scheme FROM tokens WHERE id = 't-signed'")
        ).one()
    assert tuple(row) == (key.hash_token(legacy.signed_token), "hmac-sha256")
    assert authenticate(factory, "af_not_a_token", key) is None
    engine.dispose()


def test_secrets_migration_without_the_key_changes_nothing(fresh_url: str):
    from legacy_home import make_legacy_database

    legacy = make_legacy_database(fresh_url, "http://127.0.0.1:9/hook")
    engine = make_engine(fresh_url)
    with pytest.raises(RuntimeError, match="server key"):
        migrate(engine)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        hook = conn.execute(text("SELECT secret FROM webhooks")).scalar_one()
    engine.dispose()
    assert (version, hook) == ("0007", legacy.webhook_secret)


def _migrator(engine: Engine) -> Callable[..., None]:
    """``to(revision, down=False)``: upgrade (or downgrade) ``engine`` to ``revision``."""
    from alembic import command

    from appforge.core.db import alembic_config

    def to(revision: str, down: bool = False) -> None:
        with engine.begin() as conn:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)

    return to


def _insert_app(conn: Connection, now: datetime) -> None:
    """One app row as an old revision's table holds it: uuid 'a', name 'A'."""
    conn.execute(
        text(
            "INSERT INTO apps (uuid, name, description, type, public, version, yaml, "
            "document, created_at, updated_at) VALUES ('a', 'A', '', 'chat', false, 1, '', "
            "'{}', :now, :now)"
        ),
        {"now": now},
    )


def test_process_leases_migration_keeps_runs_and_goes_down_again(fresh_url: str):
    engine = make_engine(fresh_url)

    to = _migrator(engine)
    to("0008")
    now = utcnow()
    with engine.begin() as conn:
        _insert_app(conn, now)
        conn.execute(
            text(
                "INSERT INTO runs (id, app_uuid, app_version, session_id, status, stream, input, "
                "output, steps, usage, created_at) VALUES ('r', 'a', 1, 's', 'running', false, "
                "'{}', '{}', '[]', '{}', :now)"
            ),
            {"now": now},
        )
    migrate(engine)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, process_id FROM runs")).one()
        assert conn.execute(text("SELECT count(*) FROM processes")).scalar() == 0
    assert tuple(row) == ("running", None)
    to("0008", down=True)
    assert "processes" not in inspect(engine).get_table_names()
    migrate(engine)
    assert "processes" in inspect(engine).get_table_names()
    engine.dispose()


def test_policy_cascade_migration_drops_orphans_and_keys_the_rest(fresh_url: str):
    engine = make_engine(fresh_url)

    to = _migrator(engine)
    to("0017")
    now = utcnow()
    with engine.begin() as conn:
        _insert_app(conn, now)
        conn.execute(
            text(
                "INSERT INTO use_cases (id, name, description, created_at, updated_at) "
                "VALUES ('u', 'U', '', :now, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO prompts (id, use_case_id, name, description, tags, created_at, "
                "updated_at) VALUES ('p', 'u', 'P', '', '[]', :now, :now)"
            ),
            {"now": now},
        )
        for subject, subject_id in (
            ("app", "a"),
            ("app", "gone"),
            ("prompt", "p"),
            ("prompt", "x"),
        ):
            conn.execute(
                text(
                    'INSERT INTO evaluation_policies (subject, subject_id, "require", '
                    "updated_at) VALUES (:s, :i, '{}', :now)"
                ),
                {"s": subject, "i": subject_id, "now": now},
            )
    migrate(engine)
    select_keys = "SELECT subject, subject_id, prompt_id, app_uuid FROM evaluation_policies"
    with engine.connect() as conn:
        rows = sorted(tuple(r) for r in conn.execute(text(select_keys)))
    assert rows == [("app", "a", None, "a"), ("prompt", "p", "p", None)]
    with engine.begin() as conn:  # the foreign keys now delete a policy with its subject
        conn.execute(text("DELETE FROM prompts WHERE id = 'p'"))
        conn.execute(text("DELETE FROM apps WHERE uuid = 'a'"))
        assert conn.execute(text("SELECT count(*) FROM evaluation_policies")).scalar() == 0
    to("0017", down=True)
    columns = {c["name"] for c in inspect(engine).get_columns("evaluation_policies")}
    assert "prompt_id" not in columns and "app_uuid" not in columns
    migrate(engine)
    engine.dispose()
