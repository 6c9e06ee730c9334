"""Background threads: the workers of the lease queues and the periodic jobs.

- :class:`Workers` runs a work function in background threads until stopped;
  an idle thread sleeps ``poll_seconds`` or until :meth:`Workers.wake`.
- :class:`Periodic` is a job run now and then every so often in one such
  thread (the purges of expired rows, URL entries' refresh);
  :func:`delete_in_batches` is how a purge deletes without long locks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from appforge.core.db import failure_reason, storage_full, transaction
from appforge.core.outage import Outage

log = logging.getLogger(__name__)


# How much longer than the lookout the other idle threads sleep by default: a safety
# net only, as they are woken when work comes.
_RESERVE_SLEEP_FACTOR = 30


class Workers:
    """Threads that call ``work(index)`` until stopped; ``work`` says whether it found work.

    While there is no work, one idle thread, the lookout, waits ``poll_seconds``;
    then it hands the role to another idle thread and looks for work itself, so an
    idle pool of N threads polls the database as often as one thread (an idle
    server used 10.5 ms of CPU a second before this, 5.3-6.3 after), and an idle
    thread keeps polling while the one before works on a long job. A look that
    finds work wakes the others, so they join in at once; so does :meth:`wake`,
    which callers call when they add work. Idle threads that are not the lookout
    look again after ``reserve_seconds`` at the latest, as a safety net. An
    exception in ``work`` (the database went away, ...) is logged and the thread
    carries on after a pause.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[int], bool],
        poll_seconds: float,
        reserve_seconds: float | None = None,
    ) -> None:
        """``reserve_seconds``: the safety net above (``poll_seconds`` times 30 if None)."""
        self.name = name
        self._work = work
        self._poll = poll_seconds
        self._reserve = reserve_seconds or poll_seconds * _RESERVE_SLEEP_FACTOR
        self.stopping = threading.Event()
        self._changed = threading.Condition()
        self._wakes = 0  # how many times wake() was called
        self._database = Outage(
            log,
            f"{name} workers: the database cannot be used ({{reason}})",
            f"{name} workers: the database answers again",
        )
        self._disk = Outage(
            log, f"{name} workers: {{reason}}; waiting for space", f"{name} workers: writing again"
        )
        self._lookout: int | None = None  # the idle thread that looks next
        self._threads: list[threading.Thread] = []

    def start(self, count: int) -> None:
        for index in range(count):
            thread = threading.Thread(
                target=self._loop, args=(index,), name=f"{self.name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Look for work now, in every idle thread (some was just added)."""
        with self._changed:
            self._wakes += 1
            self._changed.notify_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads, waiting up to ``timeout`` seconds for each."""
        self.stopping.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _loop(self, index: int) -> None:
        looked_out = False
        while not self.stopping.is_set():
            try:
                busy = self._work(index)
            except Exception as exc:
                # The database went away (restart, network), or the disk is full?
                reason = failure_reason(exc)
                if reason is None:
                    log.exception("%s worker error", self.name)
                else:  # said once, not per thread and poll
                    (self._disk if storage_full(exc) else self._database).failed(reason)
                busy = False
            else:
                self._database.answered()
                if busy:  # it wrote: a look that found nothing to do may write nothing
                    self._disk.answered()
            if busy:
                if looked_out:
                    self.wake()  # the lookout found work: the others join in
                looked_out = False
            else:
                looked_out = self._idle(index)

    def _idle(self, index: int) -> bool:
        """Wait until this thread should look for work again; whether it looks as the
        lookout (not woken by :meth:`wake` or the safety net)."""
        with self._changed:
            seen = self._wakes
            if self._lookout is None:
                self._lookout = index
            while self._lookout != index:
                woken = self._changed.wait_for(
                    lambda: self._wakes != seen or self._lookout is None, self._reserve
                )
                if not woken or self._wakes != seen:
                    return False
                self._lookout = index  # the role came free: wait as the lookout
            self._changed.wait_for(lambda: self._wakes != seen, self._poll)
            self._lookout = None  # look now, and let another idle thread look out
            self._changed.notify()
            return self._wakes == seen


class Periodic:
    """A job run in one background thread: at start, then every ``every`` seconds
    (at once again while :meth:`run` says there is more to do), until stopped.

    A subclass says what one round does (:meth:`run`) and whether the job runs at
    all (:meth:`enabled`, e.g. not when nothing ever expires). Any number of
    processes may run the same job on one database: rounds must be safe to
    overlap (batched deletes, or rows claimed from a :class:`~appforge.core.queue.LeaseQueue`).
    """

    def __init__(self, name: str, every: float) -> None:
        self.workers = Workers(name, self._work, every)

    @property
    def stopping(self) -> threading.Event:
        """Set once :meth:`stop` is called: a long round should end early."""
        return self.workers.stopping

    def enabled(self) -> bool:
        return True

    def run(self) -> bool:
        """One round; whether there is more to do right away."""
        raise NotImplementedError

    def start(self) -> None:
        """Run the job now and periodically, if it is enabled."""
        if self.enabled():
            self.workers.start(1)

    def wake(self) -> None:
        """Run a round now (some work just became due)."""
        self.workers.wake()

    def stop(self, timeout: float = 30.0) -> None:
        self.workers.stop(timeout)

    def _work(self, index: int) -> bool:
        return self.run()


def delete_in_batches(
    factory: sessionmaker[Session], expired: Any, key: Any, batch: int, stop: threading.Event
) -> int:
    """Delete the rows whose ``key`` the select ``expired`` finds, ``batch`` at a time,
    each batch in its own short transaction (a large backlog never holds locks for
    long), until none is left or ``stop`` is set; how many went."""
    total = 0
    while True:
        with transaction(factory) as db:
            ids = list(db.scalars(expired.limit(batch)))
            if ids:
                db.execute(
                    delete(key.class_)
                    .where(key.in_(ids))
                    .execution_options(synchronize_session=False)
                )
        total += len(ids)
        if len(ids) < batch or stop.is_set():
            return total
