"""Which evaluation cases a worker may claim: the lease table of ``evaluation_cases``
and the statements the workers of :mod:`evals.queue` run on it, each built once.

A case is claimable when it is ``pending``, or ``running`` while its worker is gone
(its lease ran out, or its process has no row in ``processes``), and its
evaluation has fewer running cases than its ``concurrency``.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Update,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from appforge.core.db import UTCDateTime
from appforge.core.queue import LeaseTable
from evals.tables import Evaluation, EvaluationCase
from runs.tables import Process

OPEN = ("pending", "running")


def _claimable_at(now: Any) -> ColumnElement[bool]:
    """Pending cases, and running ones whose worker is gone, of evaluations below their
    concurrency, at ``now``."""
    other = aliased(EvaluationCase, name="other")
    live = select(Process.id)
    running = (
        select(func.count())
        .select_from(other)
        .where(
            other.evaluation_id == EvaluationCase.evaluation_id,
            other.status == "running",
            other.lease_until >= now,
            or_(other.process_id.is_(None), other.process_id.in_(live)),
        )
        .scalar_subquery()
    )
    limit = (
        select(Evaluation.concurrency)
        .where(Evaluation.id == EvaluationCase.evaluation_id)
        .scalar_subquery()
    )
    gone = or_(
        EvaluationCase.lease_until < now,
        and_(EvaluationCase.process_id.is_not(None), EvaluationCase.process_id.not_in(live)),
    )
    return and_(
        or_(EvaluationCase.status == "pending", and_(EvaluationCase.status == "running", gone)),
        running < limit,
    )


# The condition is built once, its ``now`` a parameter read when a statement runs: a
# claim uses it three times, and building it costs milliseconds of CPU each time (it
# was most of a claim's cost). ``now`` is per thread: each worker claims at its own.
_now = threading.local()
_CLAIMABLE = _claimable_at(
    bindparam("claimable_now", callable_=lambda: _now.value, type_=UTCDateTime())
)


def claimable(now: datetime) -> ColumnElement[bool]:
    """The claimable condition (see :func:`_claimable_at`) at ``now``, for the statement
    this thread runs next."""
    _now.value = now
    return _CLAIMABLE


CASES = LeaseTable(EvaluationCase, "id", claimable, "id", "running")
# A claimed case's run id: its own, or a fresh one (``claim_run_id``) if it has none.
RUN_ID = func.coalesce(EvaluationCase.run_id, bindparam("claim_run_id", type_=String(36)))
# Whether an evaluation has an open case (built once, like the claimable condition).
OPEN_CASE = (
    select(EvaluationCase.id)
    .where(EvaluationCase.evaluation_id == bindparam("e_id"), EvaluationCase.status.in_(OPEN))
    .limit(1)
)
# Evaluations left open with every case closed: the worker that stored the last result
# died before its next claim, the look that ends an evaluation ``done``. Every process
# ends them at start and now and then while idle (``EvaluationQueue.end_stranded``).
STRANDED: Update = (
    update(Evaluation)
    .where(
        Evaluation.status.in_(("queued", "running")),
        ~exists().where(
            EvaluationCase.evaluation_id == Evaluation.id, EvaluationCase.status.in_(OPEN)
        ),
    )
    .values(status="done", finished_at=bindparam("now", type_=UTCDateTime()))
    .execution_options(synchronize_session=False)
)
