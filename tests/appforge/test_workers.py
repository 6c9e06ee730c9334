"""Background worker pools: one lookout polls while the pool is idle, and the others
join in when it finds work."""

from __future__ import annotations

import threading
from collections import Counter

from waiting import poll_until

from appforge.core.workers import Workers


class Jobs:
    """A work function over a count of waiting jobs, counting each thread's looks."""

    def __init__(self) -> None:
        self.waiting = 0
        self.looks: Counter[int] = Counter()
        self.lock = threading.Lock()

    def __call__(self, index: int) -> bool:
        with self.lock:
            self.looks[index] += 1
            if self.waiting:
                self.waiting -= 1
                return True
            return False


def test_an_idle_pool_polls_with_one_thread_and_all_join_when_it_finds_work():
    jobs = Jobs()
    # The reserve threads sleep an hour unless woken: any look of theirs after their
    # first one is a wake-up, however slow the machine.
    pool = Workers("test", jobs, poll_seconds=0.01, reserve_seconds=3600)
    pool.start(3)
    try:
        poll_until(lambda: jobs.looks[0] >= 20 and jobs.looks[1] and jobs.looks[2])
        assert (jobs.looks[1], jobs.looks[2]) == (1, 1)  # only the lookout polled

        with jobs.lock:  # work arrives from elsewhere (another process): no wake() call
            jobs.waiting = 50
        poll_until(lambda: jobs.looks[1] > 1 and jobs.looks[2] > 1)  # the lookout woke them
        poll_until(lambda: jobs.waiting == 0)

        looked = jobs.looks[1]
        pool.wake()  # work added in this process wakes every thread
        poll_until(lambda: jobs.looks[1] > looked)
    finally:
        pool.stop()
