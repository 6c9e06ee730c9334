"""Crash recovery: a run whose process died is failed ``INTERRUPTED``, not left ``running``.

Each API process registers a row in ``processes`` (:class:`ProcessLease`) and
renews its ``heartbeat_at`` every ``APPFORGE_RUNS__HEARTBEAT_SECONDS``; each
run records the id of the process executing it. A process is dead when

- its heartbeat is older than ``APPFORGE_RUNS__PROCESS_TIMEOUT_SECONDS`` (a
  process on any machine, frozen or gone), or
- it ran on this machine and its pid no longer names it (its boot id and start
  time differ, or no such pid): known at once, so a server restarted after a
  ``kill -9`` frees the old process's runs at start-up, not a timeout later.

A sweep (at start-up, then with every heartbeat, in every process) fails the
``running`` runs of dead processes, and runs recorded before processes were
tracked that are older than any run can last, then forgets the dead processes.
The runs stop counting against ``max_active_runs`` at once. A process that
stops cleanly fails its own leftovers and removes its row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, delete, insert, or_, select, update
from sqlalchemy.engine import Engine

from appforge.core.db import failure_reason, utcnow
from appforge.core.outage import Outage
from runs.tables import Process, Run

log = logging.getLogger(__name__)

INTERRUPTED = "INTERRUPTED"
_MESSAGE = "the server process running this run stopped before it ended"


def process_tag(pid: int) -> str:
    """What tells this pid's process apart from a later one with the same pid:
    the boot id and the process's start time ("" where /proc is not available)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22 is the start time; the command name (field 2) may hold spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    return f"{boot}:{fields[19]}"


def local_process_alive(pid: int, tag: str) -> bool:
    """Whether the process ``pid`` with ``tag`` (see :func:`process_tag`) still runs here."""
    if tag:
        return process_tag(pid) == tag
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Sweep:
    """What one sweep found: dead processes and the runs it failed."""

    dead_processes: int
    failed_runs: int


def sweep(conn: Connection, host: str, process_timeout: float, run_timeout: float) -> Sweep:
    """Fail the running runs of dead processes and forget those processes."""
    now = utcnow()
    stale = now - timedelta(seconds=process_timeout)
    rows = conn.execute(
        select(Process.id, Process.host, Process.pid, Process.tag, Process.heartbeat_at)
    ).all()
    dead = [
        r.id
        for r in rows
        if r.heartbeat_at < stale or (r.host == host and not local_process_alive(r.pid, r.tag))
    ]
    untracked_before = now - timedelta(seconds=run_timeout + 30)
    orphaned = or_(
        Run.process_id.in_(dead),
        Run.process_id.not_in(select(Process.id)),
        (Run.process_id.is_(None)) & (Run.created_at < untracked_before),
    )
    failed = conn.execute(
        update(Run)
        .where(Run.status == "running", orphaned)
        .values(
            status="failed",
            error={"code": INTERRUPTED, "message": _MESSAGE, "step": None},
            finished_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if dead:
        conn.execute(delete(Process).where(Process.id.in_(dead)))
    return Sweep(len(dead), failed or 0)


class ProcessLease:
    """This process's row in ``processes``, renewed by a heartbeat thread that also sweeps."""

    def __init__(
        self, engine: Engine, heartbeat: float, process_timeout: float, run_timeout: float
    ) -> None:
        self.engine = engine
        self.id = str(uuid.uuid4())
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self.heartbeat = heartbeat
        self.process_timeout = process_timeout
        self.run_timeout = run_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = Outage(
            log, "process heartbeat failed: {reason}", "process heartbeat renewed again"
        )

    def start(self) -> None:
        """Register this process, sweep once, then renew and sweep in the background."""
        with self.engine.begin() as conn:
            self._register(conn, utcnow())
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="process-lease", daemon=True)
        self._thread.start()

    def _register(self, conn: Connection, now: datetime) -> None:
        conn.execute(
            insert(Process).values(
                id=self.id,
                host=self.host,
                pid=self.pid,
                tag=process_tag(self.pid),
                started_at=now,
                heartbeat_at=now,
            )
        )

    def beat(self) -> Sweep:
        """Renew the heartbeat (registering again if a sweeper took this process for
        dead), then sweep; one transaction."""
        with self.engine.begin() as conn:
            now = utcnow()
            renewed = conn.execute(
                update(Process).where(Process.id == self.id).values(heartbeat_at=now)
            ).rowcount
            if not renewed:
                self._register(conn, now)
            found = sweep(conn, self.host, self.process_timeout, self.run_timeout)
        if found.failed_runs:
            log.warning(
                "failed %d runs of %d dead processes (%s)",
                found.failed_runs,
                found.dead_processes,
                INTERRUPTED,
            )
        return found

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self.beat()
            except Exception as exc:  # the database may be away for a while: try again later
                reason = failure_reason(exc)
                if reason is None:
                    log.exception("process heartbeat failed")
                else:  # an outage or a full disk: said once, not every heartbeat
                    self._outage.failed(reason)
            else:
                self._outage.answered()

    def stop(self) -> None:
        """Stop the heartbeat; fail this process's leftover runs and remove its row.

        Call after the run workers stopped: a run still ``running`` then never ends.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(Run)
                    .where(Run.status == "running", Run.process_id == self.id)
                    .values(
                        status="failed",
                        error={"code": INTERRUPTED, "message": _MESSAGE, "step": None},
                        finished_at=utcnow(),
                    )
                )
                conn.execute(delete(Process).where(Process.id == self.id))
        except Exception:  # the database is away: the next process's sweep does this
            log.exception("could not release this process's lease")
