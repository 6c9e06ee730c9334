"""Crash recovery on real SQLite and PostgreSQL: runs of dead processes become INTERRUPTED."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from appforge.core.db import load_tables, make_engine, migrate, utcnow
from appforge.core.settings import RunSettings
from runs.recovery import INTERRUPTED, ProcessLease, process_tag
from runs.tables import App, ChatSession, Process, Run

HOUR = timedelta(hours=1)


@pytest.fixture
def engine(backend: str | None, tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(backend or f"sqlite:///{tmp_path / 'recovery.db'}")
    migrate(made)
    with made.begin() as conn:
        for table in reversed(load_tables().sorted_tables):
            if table.name in ("processes", "runs", "sessions", "apps"):
                conn.execute(delete(table))
        now = utcnow()
        conn.execute(
            insert(App).values(
                uuid="app", name="A", description="", type="chat", public=False, version=1,
                yaml="", document={}, created_at=now, updated_at=now,
            )
        )  # fmt: skip
        conn.execute(insert(ChatSession).values(id="s", app_uuid="app", created_at=now))
    yield made
    made.dispose()


def _process(engine: Engine, pid: str, host: str, os_pid: int, tag: str, age: timedelta) -> None:
    beat = utcnow() - age
    with engine.begin() as conn:
        conn.execute(
            insert(Process).values(
                id=pid, host=host, pid=os_pid, tag=tag, started_at=beat, heartbeat_at=beat
            )
        )


def _run(engine: Engine, run_id: str, process_id: str | None, age: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Run).values(
                id=run_id, app_uuid="app", app_version=1, session_id="s", process_id=process_id,
                status="running", input={}, output={}, steps=[], usage={},
                created_at=utcnow() - age,
            )
        )  # fmt: skip


def _states(engine: Engine) -> dict[str, tuple[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Run.id, Run.status, Run.error)).all()
    return {r.id: (r.status, (r.error or {}).get("code")) for r in rows}


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_recovery_fails_runs_of_dead_processes_only(engine: Engine):
    lease = ProcessLease(engine, heartbeat=10, process_timeout=60, run_timeout=300)
    fresh, here = timedelta(seconds=1), lease.host
    _process(engine, "far-alive", "elsewhere", 1, "", fresh)  # another machine, beating
    _process(engine, "far-dead", "elsewhere", 1, "", timedelta(seconds=120))  # stopped beating
    _process(engine, "near-dead", here, _dead_pid(), "x", fresh)  # this machine, pid gone
    _process(engine, "near-alive", here, os.getpid(), process_tag(os.getpid()), fresh)
    for name in ("far-alive", "far-dead", "near-dead", "near-alive"):
        _run(engine, f"run-{name}", name, fresh)
    _run(engine, "run-gone", "never-registered", fresh)
    _run(engine, "run-old-untracked", None, 2 * HOUR)  # before 0008, older than any run
    _run(engine, "run-new-untracked", None, fresh)
    lease.start()
    try:
        states = _states(engine)
        with engine.connect() as conn:
            processes = set(conn.scalars(select(Process.id)))
    finally:
        lease.stop()
    failed = ("failed", INTERRUPTED)
    assert states == {
        "run-far-alive": ("running", None),
        "run-far-dead": failed,
        "run-near-dead": failed,
        "run-near-alive": ("running", None),
        "run-gone": failed,
        "run-old-untracked": failed,
        "run-new-untracked": ("running", None),
    }
    assert processes == {"far-alive", "near-alive", lease.id}


def test_recovery_clean_stop_fails_own_leftovers_and_heartbeat_reregisters(engine: Engine):
    lease = ProcessLease(engine, heartbeat=10, process_timeout=60, run_timeout=300)
    lease.start()
    _run(engine, "mine", lease.id, timedelta(seconds=1))
    with engine.begin() as conn:  # another process took this one for dead
        conn.execute(delete(Process).where(Process.id == lease.id))
    lease.beat()
    with engine.connect() as conn:
        assert conn.scalar(select(Process.id).where(Process.id == lease.id)) == lease.id
    lease.stop()
    assert _states(engine)["mine"] == ("failed", INTERRUPTED)
    with engine.connect() as conn:
        assert conn.scalar(select(Process.id)) is None


def test_recovery_settings_need_timeout_past_heartbeat():
    with pytest.raises(ValueError, match="process_timeout_seconds"):
        RunSettings(heartbeat_seconds=30, process_timeout_seconds=20)
