"""Background worker pools: an idle pool polls as one thread, all threads join in when
work is found, and an idle thread keeps polling while another works on a long job."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest
from sqlalchemy import text
from waiting import poll_until

from appforge.core.db import make_engine
from appforge.core.workers import Workers


class Jobs:
    """A work function over a count of waiting jobs, counting each thread's looks and
    jobs done. The next job taken after ``blocker`` is set waits for that event."""

    def __init__(self) -> None:
        self.waiting = 0
        self.looks: Counter[int] = Counter()
        self.done: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.blocker: threading.Event | None = None
        self.held: list[int] = []

    def add(self, count: int) -> None:  # work arriving from elsewhere: nobody calls wake()
        with self.lock:
            self.waiting += count

    def __call__(self, index: int) -> bool:
        with self.lock:
            self.looks[index] += 1
            if not self.waiting:
                return False
            self.waiting -= 1
            blocker, self.blocker = self.blocker, None
            if blocker is not None:
                self.held.append(index)
        if blocker is not None:
            blocker.wait()
        with self.lock:
            self.done[index] += 1
        return True

    def total_looks(self) -> int:
        with self.lock:
            return sum(self.looks.values())


POLL = 0.05


def _started(jobs: Jobs) -> Workers:
    # The reserve threads sleep an hour unless woken: only the lookout's polls and
    # wake-ups make them look again, however slow the machine.
    pool = Workers("test", jobs, poll_seconds=POLL, reserve_seconds=3600)
    pool.start(3)
    poll_until(lambda: len(jobs.looks) == 3)
    return pool


def test_an_idle_pool_polls_as_one_thread_and_all_join_when_work_is_found():
    jobs = Jobs()
    pool = _started(jobs)
    try:
        # Each look of an idle pool follows its own full poll_seconds of waiting by
        # the lookout of the moment, one lookout after the other: a load on the
        # machine makes fewer looks, never more. Three threads polling would make
        # three times as many.
        started, looks_before = time.monotonic(), jobs.total_looks()
        poll_until(lambda: jobs.total_looks() - looks_before >= 20)
        elapsed, looks = time.monotonic() - started, jobs.total_looks() - looks_before
        assert looks <= elapsed / POLL + 2, (looks, elapsed)

        before = dict(jobs.looks)
        jobs.add(50)
        poll_until(lambda: all(jobs.looks[i] > before[i] for i in range(3)))  # all join in
        poll_until(lambda: sum(jobs.done.values()) == 50)

        before = dict(jobs.looks)
        pool.wake()  # work added in this process wakes every thread
        poll_until(lambda: all(jobs.looks[i] > before[i] for i in range(3)))
    finally:
        pool.stop()


def test_while_the_lookout_works_a_long_job_another_thread_looks_out():
    jobs = Jobs()
    pool = _started(jobs)
    release = threading.Event()
    try:
        jobs.blocker = release
        jobs.add(1)
        poll_until(lambda: jobs.held)  # a thread is on a long job (a slow URL, say)
        jobs.add(5)  # more work comes from elsewhere meanwhile: another thread takes it
        poll_until(lambda: sum(jobs.done.values()) == 5)
        assert jobs.done[jobs.held[0]] == 0
        release.set()
        poll_until(lambda: sum(jobs.done.values()) == 6)
    finally:
        release.set()
        pool.stop()


@pytest.mark.postgres
def test_a_database_outage_is_one_warning_then_one_line_when_it_answers(
    caplog: pytest.LogCaptureFixture,
):
    """Not a traceback per thread and poll: a restarting database made 11 worker threads
    log one each, every second, until it was back."""
    server = os.environ.get("APPFORGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    name = f"appforge_away_{uuid.uuid4().hex[:10]}"
    engine = make_engine(f"{server}/{name}")  # no such database yet: every poll fails
    tries: list[int] = []
    reached: list[bool] = []

    def work(_: int) -> bool:
        tries.append(1)
        with engine.connect() as conn:
            reached.append(conn.execute(text("SELECT 1")).scalar() == 1)
        return False

    caplog.set_level(logging.INFO, logger="appforge.core.workers")
    pool = Workers("probe", work, poll_seconds=POLL)
    pool.start(1)  # one thread: no failure of another can land after the first success
    try:
        poll_until(lambda: len(tries) >= 5)  # five polls failed
        with psycopg.connect(f"{server}/test", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        poll_until(lambda: reached)
    finally:
        pool.stop()
        engine.dispose()
        with psycopg.connect(f"{server}/test", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    said = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert [level for level, _, _ in said] == ["WARNING", "INFO"], said
    assert f'database "{name}" does not exist' in said[0][1] and said[0][2] is None
    assert said[1][1] == "probe workers: the database answers again"


def test_a_full_disk_is_one_warning_then_one_line_once_a_job_writes(
    caplog: pytest.LogCaptureFixture,
):
    """A worker whose writes meet the full disk (here /dev/full, a real ENOSPC) says so
    once, not with a traceback per poll, and says it writes again only after work that
    was done (a poll that found nothing to do proves nothing about the disk)."""
    full = threading.Event()
    full.set()
    polls: list[bool] = []
    tries: list[bool] = []

    def work(_: int) -> bool:
        tries.append(True)
        if full.is_set():
            with open("/dev/full", "wb") as device:
                device.write(b"x")
                device.flush()
        polls.append(True)
        return len(polls) == 3  # idle twice, then one job done

    caplog.set_level(logging.INFO, logger="appforge.core.workers")
    pool = Workers("disk", work, poll_seconds=POLL)
    pool.start(1)
    try:
        poll_until(lambda: len(tries) >= 5)  # five polls met the full disk
        full.clear()
        poll_until(lambda: len(polls) >= 4)
    finally:
        pool.stop()
    said = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert [level for level, _, _ in said] == ["WARNING", "INFO"], said
    assert (
        said[0][1].startswith("disk workers: the disk is full ([Errno 28]") and said[0][2] is None
    )
    assert said[1][1] == "disk workers: writing again"
