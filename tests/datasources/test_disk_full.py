"""A full disk: writes answer 507 STORAGE_FULL with nothing stored, entries wait for space
instead of failing, and an embedded Chroma that failed a write is opened again instead
of freezing the process.

The home lives on a tmpfs of its own (mounted here; the tests need root, as CI has),
filled with a file that takes what space is left: a real full disk, not a stand-in.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from openai_edge import Reply, serve_edge, sse_chunk
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from appforge.cli import main
from appforge.core.db import storage_full
from appforge.core.errors import StorageFullError
from appforge.core.settings import OpenAISettings, Settings
from datasources.index import VectorIndex, make_client
from tests.api.app_docs import STREAMED_APP
from tests.datasources.support import assert_given_back, get_entry

RAG_APP = """version: 1
name: Full
type: text
input:
  q: {type: string}
steps:
  - id: docs
    kind: retrieve
    datasources: [notes]
    query: "{{ input.q }}"
  - id: answer
    kind: llm
    prompt: {user: "{{ docs.documents|length }} {{ input.q }}"}
    params: {max_tokens: 2}
output:
  answer: "{{ answer.text }}"
"""
YAML = {"Content-Type": "text/yaml"}
FULL = "STORAGE_FULL"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 128 MiB tmpfs of this test's own."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Take all the space left on ``disk`` but ``leave`` bytes; the file that does it."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(1, free - leave))
    return filler


def _code(answer: Any, status: int) -> str:
    assert answer.status_code == status, answer.text
    return str(answer.json()["error"]["code"])


def _free_bytes(client: TestClient) -> float:
    """What ``GET /metrics`` says is free on the home's disk."""
    scraped = client.get("/metrics")
    assert scraped.status_code == 200, scraped.text
    line = next(x for x in scraped.text.splitlines() if x.startswith("appforge_home_free_bytes "))
    return float(line.split()[1])


def _files(disk: Path) -> list[Path]:
    return sorted(p for p in (disk / "home" / "files").rglob("*") if p.is_file())


def _entry(text: str) -> dict[str, Any]:
    return {"entry_data": {"name": text[:20], "content": text}}


def _tea(n: int) -> str:
    """A text of ``n`` distinct sentences (no two entries' texts are the same)."""
    leaves = ["green", "oolong", "black", "white", "puerh", "jasmine"]
    return " ".join(f"Tea {i}: {leaves[i % 6]} leaves steep {i % 7 + 1} minutes." for i in range(n))


def test_writes_on_a_full_disk_are_507_and_store_nothing_and_reads_go_on(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], disk: Path
):
    """Before, an upload on a full disk was 500 INTERNAL_ERROR, and so was anything that
    wrote to the SQLite database ("database or disk is full")."""
    settings = make_settings(
        home=disk / "home", datasources={"workers": 0}, metrics={"enabled": True}
    )
    client = make_client(settings)
    notes = client.post("/api/datasources", json={"name": "notes", "type": "text"}).json()
    files = client.post("/api/datasources", json={"name": "files", "type": "file"}).json()
    assert client.post(f"/api/datasources/{notes['uuid']}/entries", json=_entry(_tea(3))).is_success
    made = client.post("/api/apps", content=RAG_APP, headers=YAML)
    assert made.status_code == 201, made.text
    run_path = f"/api/apps/{made.json()['uuid']}/run"
    before = {
        "entries": client.get(f"/api/datasources/{notes['uuid']}/entries").json(),
        "apps": client.get("/api/apps").json(),
        "runs": client.get("/api/runs").json(),
    }
    kept_files = _files(disk)
    # SQLite appends to its write-ahead log: empty it, so every write needs new space.
    with sqlite3.connect(disk / "home" / "appforge.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert _free_bytes(client) > 64 * 2**20
    filler = fill(disk)
    assert _free_bytes(client) < 2**20  # an operator's alert sees it coming

    upload = client.post(
        f"/api/datasources/{files['uuid']}/entries/upload",
        files={"file": ("tea.txt", b"Green tea steeps for two minutes." * 3000, "text/plain")},
    )
    assert _code(upload, 507) == FULL
    assert "storage is full" in upload.json()["error"]["message"]
    more = client.post(f"/api/datasources/{notes['uuid']}/entries", json=_entry(_tea(2000)))
    assert _code(more, 507) == FULL
    app = client.post("/api/apps", content=RAG_APP.replace("Full", "Fuller"), headers=YAML)
    assert _code(app, 507) == FULL
    assert _code(client.post(run_path, json={"input": {"q": "tea"}}), 507) == FULL
    assert client.get(f"/api/datasources/{notes['uuid']}/entries").json() == before["entries"]
    assert client.get("/api/apps").json() == before["apps"]
    assert client.get("/api/runs").json() == before["runs"]
    assert _files(disk) == kept_files  # no temporary file left

    filler.unlink()
    again = client.post(
        f"/api/datasources/{files['uuid']}/entries/upload",
        files={"file": ("tea.txt", b"Green tea steeps for two minutes." * 3000, "text/plain")},
    )
    assert again.status_code == 201, again.text
    assert client.post(
        "/api/apps", content=RAG_APP.replace("Full", "Fuller"), headers=YAML
    ).is_success


@pytest.mark.parametrize("route", ["run", "v1"])
def test_a_streamed_run_that_cannot_be_stored_says_the_disk_is_full(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    disk: Path,
    route: str,
):
    """The disk fills after a streamed run's first words: its status is sent, so its
    last line is an error, and that error says what happened (``STORAGE_FULL``, as a
    run that was not streamed is answered 507), not "internal error"."""
    gate = threading.Event()
    with serve_edge() as edge:
        events = [sse_chunk("Green tea", None), sse_chunk(" steeps.", "stop")]
        edge.replies = [Reply(200, None, sse=events, gate=gate)]
        settings = make_settings(
            home=disk / "home",
            datasources={"workers": 0},
            openai=OpenAISettings(base_url=edge.url),
            models={"default": "openai:gpt-test"},
        )
        client = make_client(settings)
        made = client.post("/api/apps", content=STREAMED_APP, headers=YAML)
        assert made.status_code == 201, made.text
        with sqlite3.connect(disk / "home" / "appforge.db") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if route == "run":
            path, body = (
                f"/api/apps/{made.json()['uuid']}/run",
                {"input": {"q": "tea"}, "stream": True},
            )
        else:
            question = [{"role": "user", "content": "tea"}]
            path, body = (
                "/v1/chat/completions",
                {"model": "Streamed", "messages": question, "stream": True},
            )
        try:
            with client.stream("POST", path, json=body) as answer:
                assert answer.status_code == 200
                lines = answer.iter_lines()
                next(line for line in lines if "Green tea" in line)  # the first words
                fill(disk)
                gate.set()
                rest = [line for line in lines if line.strip()]
        finally:
            gate.set()
    if route == "run":
        error = json.loads(rest[-1])["error"]
    else:
        assert rest[-1] == "data: [DONE]" or rest[-1].startswith("data: {")
        error = next(json.loads(line[6:])["error"] for line in rest if '"error"' in line)
    assert error["code"] == FULL, rest
    assert "storage is full" in error["message"]


@pytest.mark.postgres
def test_entries_that_find_the_disk_full_wait_for_space_then_are_ingested(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    disk: Path,
    empty_postgres: str,
):
    """The database is elsewhere (PostgreSQL); the embedded Chroma's files fill the disk.
    Before, such an entry failed for good (``INGEST_FAILED: InternalError('... database
    or disk is full')``), to be retried by hand once space was freed."""
    settings = make_settings(
        home=disk / "home", database_url=empty_postgres, datasources={"workers": 0}
    )
    client = make_client(settings)
    state: Any = client.app
    queue = state.state.api.ingestion
    made = client.post("/api/datasources", json={"name": "notes", "type": "text"}).json()
    ds = made["uuid"]
    small = client.post(f"/api/datasources/{ds}/entries", json=_entry(_tea(5))).json()["uuid"]
    assert queue.run_once() == [small]
    large = client.post(f"/api/datasources/{ds}/entries", json=_entry(_tea(300))).json()["uuid"]
    # Less free than LOW_SPACE_BYTES (datasources/index.py): any write of chunks is refused.
    filler = fill(disk, leave=1_000_000)
    assert queue.run_once() == [large]
    assert_given_back(client, ds, large, "waiting for disk space")
    assert queue.run_once() == []  # the queue waits for space before trying again
    found = client.post(f"/api/datasources/{ds}/search", json={"query": "oolong"})
    assert found.status_code == 200, found.text  # searches go on

    filler.unlink()
    queue.disk_recheck_seconds = 0.0
    assert queue.run_once() == [large]
    entry = get_entry(client, ds, large)
    assert (entry["status"], entry["error"], entry["attempts"]) == ("ready", None, 1)
    assert entry["chunks_done"] == entry["chunks_total"] > 1
    query = {"query": "Tea 299", "mode": "keyword", "top_k": 1}
    hit = client.post(f"/api/datasources/{ds}/search", json=query).json()["results"][0]
    assert hit["metadata"]["entry_uuid"] == large
    vector = client.post(f"/api/datasources/{ds}/search", json={**query, "mode": "vector"})
    assert vector.json()["results"], vector.text


def _chunks(rng: Any, prefix: str, n: int = 100) -> tuple[Any, ...]:
    ids = [f"{prefix}:{i}" for i in range(n)]
    texts = [f"{prefix} tea {i} steeps for some minutes. " * 5 for i in range(n)]
    metas = [{"entry_uuid": prefix} for _ in range(n)]
    return ids, rng.random((n, 384)).astype("float32"), texts, metas


def test_an_embedded_chroma_refuses_a_write_that_would_fill_its_disk(disk: Path):
    """Chroma does not write its files atomically: a write that met the full disk left a
    collection's index file cut short ("Error deserializing pickle file" on every later
    write to it), or the next write waited for ever holding the interpreter's lock (the
    whole server froze). Now a write that would leave less than LOW_SPACE_BYTES free is
    refused before Chroma sees it, and writes go on once space is freed. A watchdog
    (faulthandler's own thread, which needs no lock) ends the test if a write hangs."""
    files = disk / "chroma"
    index = VectorIndex(make_client(None, files), files=files)
    rng = np.random.default_rng(0)
    for n in range(3):
        index.add("ds", *_chunks(rng, f"first{n}"))
    faulthandler.dump_traceback_later(600, exit=True, file=sys.stderr)
    try:
        for round in range(3):
            filler = fill(disk, leave=1_000_000)
            with pytest.raises(StorageFullError):
                for n in range(20):
                    index.add("ds", *_chunks(rng, f"full{round}-{n}"))
            filler.unlink()
            for n in range(3):
                index.add("ds", *_chunks(rng, f"after{round}-{n}"))
            assert len(index.query("ds", rng.random(384).astype("float32"), 3)) == 3
            assert index.count("ds", f"after{round}-2") == 100
    finally:
        faulthandler.cancel_dump_traceback_later()
        index.close()


def test_an_embedded_chroma_that_failed_a_write_is_opened_again_not_frozen(
    disk: Path, monkeypatch: pytest.MonkeyPatch
):
    """Should the disk fill anyway (another process's writes, say), the client that met it
    is dropped and the files opened again at the next call, so no later call waits on the
    broken one for ever. Each round writes to a collection of its own (the one that met
    the full disk may be broken for good: Chroma's own bug)."""
    monkeypatch.setattr("datasources.index.LOW_SPACE_BYTES", -(2**40))  # no guard
    files = disk / "chroma"
    index = VectorIndex(make_client(None, files), files=files)
    rng = np.random.default_rng(0)
    faulthandler.dump_traceback_later(600, exit=True, file=sys.stderr)
    try:
        for round in range(3):
            for n in range(3):
                index.add(f"ds{round}", *_chunks(rng, f"first{round}-{n}"))
            filler = fill(disk, leave=1_000_000)
            with pytest.raises(Exception):  # noqa: B017 - Chroma's words vary with the write
                for n in range(20):
                    index.add(f"ds{round}", *_chunks(rng, f"full{round}-{n}"))
            filler.unlink()
            index.add(f"other{round}", *_chunks(rng, f"after{round}"))
            assert index.count(f"other{round}") == 100
    finally:
        faulthandler.cancel_dump_traceback_later()
        index.close()


def test_what_says_the_disk_is_full(tmp_path: Path):
    """Real errors of a full store; others (a locked database, a missing table) are not."""
    engine = create_engine(f"sqlite:///{tmp_path / 'small.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x TEXT)"))
    with engine.connect() as conn:
        conn.execute(text("PRAGMA max_page_count = 3"))  # SQLite's own limit: SQLITE_FULL
        with pytest.raises(OperationalError) as full:
            for _ in range(100):
                conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": "x" * 2000})
        with pytest.raises(OperationalError) as missing:
            conn.execute(text("SELECT * FROM no_such_table"))
    engine.dispose()
    assert storage_full(full.value)
    assert not storage_full(missing.value)
    with pytest.raises(OSError) as no_space, open("/dev/full", "wb") as device:
        device.write(b"x")
        device.flush()
    assert storage_full(no_space.value)
    assert not storage_full(FileNotFoundError(2, "no such file"))
    wrapped = RuntimeError("a step failed")
    wrapped.__cause__ = no_space.value
    assert storage_full(wrapped)


def test_a_command_on_a_full_home_ends_with_one_line(disk: Path, monkeypatch: pytest.MonkeyPatch):
    """Before, a command whose database write met the full disk ended in a traceback."""
    monkeypatch.setenv("APPFORGE_HOME", str(disk / "home"))
    runner = CliRunner()
    made = runner.invoke(main, ["token", "create", "first", "--admin"], catch_exceptions=False)
    assert made.exit_code == 0, made.stderr
    with sqlite3.connect(disk / "home" / "appforge.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every write needs new space
    filler = fill(disk)
    full = runner.invoke(main, ["token", "create", "second", "--admin"])
    assert full.exit_code == 1, full.output
    assert full.stderr.startswith("error [STORAGE_FULL]: "), full.stderr
    assert "Traceback" not in full.output
    filler.unlink()
    again = runner.invoke(main, ["token", "create", "second", "--admin"], catch_exceptions=False)
    assert again.exit_code == 0, again.stderr


def test_a_restore_that_meets_a_full_disk_leaves_the_home_as_it_was(
    disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Before, a restore committed the backup's rows and then wrote its files: a disk
    that filled on a file left the rows restored and files missing. Files now go
    beside the home first, and are moved into place after the commit."""
    monkeypatch.setenv("APPFORGE_SECRET_KEY", "restore-full-disk-key-0123456789abcdef")
    runner = CliRunner()
    source = tmp_path / "source"
    monkeypatch.setenv("APPFORGE_HOME", str(source))
    made = runner.invoke(main, ["token", "create", "from-backup"], catch_exceptions=False)
    assert made.exit_code == 0, made.stderr
    stored = source / "files" / "ds" / "big.bin"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(os.urandom(24 * 1024 * 1024))
    backup = tmp_path / "backup.json"
    written = runner.invoke(main, ["backup", "--json-path", str(backup)], catch_exceptions=False)
    assert written.exit_code == 0, written.stderr

    target = disk / "home"
    monkeypatch.setenv("APPFORGE_HOME", str(target))
    mine = runner.invoke(main, ["token", "create", "mine"], catch_exceptions=False)
    assert mine.exit_code == 0, mine.stderr
    filler = fill(disk, leave=8 * 1024 * 1024)  # room for the rows, not for the file
    full = runner.invoke(main, ["restore", "--json-path", str(backup), "--yes"])
    assert full.exit_code == 1, full.output
    assert "No space left on device" in full.stderr and "Traceback" not in full.output
    with sqlite3.connect(target / "appforge.db") as db:
        assert [r[0] for r in db.execute("SELECT name FROM tokens")] == ["mine"]
    assert not list(target.glob(".restoring-*"))
    assert not (target / "files").exists()

    filler.unlink()
    again = runner.invoke(main, ["restore", "--json-path", str(backup), "--yes"])
    assert again.exit_code == 0, again.output
    with sqlite3.connect(target / "appforge.db") as db:
        assert [r[0] for r in db.execute("SELECT name FROM tokens")] == ["from-backup"]
    assert (target / "files" / "ds" / "big.bin").read_bytes() == stored.read_bytes()
    assert not list(target.glob(".restoring-*"))
