"""Background worker pools: an idle pool polls as one thread, all threads join in when
work is found, and an idle thread keeps polling while another works on a long job."""

from __future__ import annotations

import threading
import time
from collections import Counter

from waiting import poll_until

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
