"""Gated changes: a prompt label moves only if an evaluation with the candidate passes.

:func:`gate` starts the evaluation (the app, run with the candidate prompt
version pinned), works its cases in the calling thread (workers of this or any
process may take some), waits for it to end, and raises ``EVALUATION_FAILED``
(409, naming the evaluation) when it did not end ``done`` with a pass rate of at
least ``min_pass_rate``. The caller then makes its change, recording the
evaluation's id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from appforge.core.settings import EvalSettings
from evals.errors import EvaluationFailedError
from evals.evaluations import NewEvaluation, case_rows, get_evaluation, start_evaluation
from evals.queue import EvaluationQueue
from evals.summary import summarize
from runs.service import Caller


@dataclass(frozen=True)
class Passed:
    """The evaluation a gated change passed."""

    evaluation_id: str
    pass_rate: float


def _ended(factory: sessionmaker[Session], evaluation_id: str) -> tuple[str, float] | None:
    with factory() as db:
        row = get_evaluation(db, evaluation_id)
        if row.status in ("queued", "running"):
            return None
        rate = summarize(case_rows(db, evaluation_id))["pass_rate"]
        return row.status, float(rate or 0.0)


def gate(
    queue: EvaluationQueue,
    new: NewEvaluation,
    caller: Caller,
    limits: EvalSettings,
    min_pass_rate: float,
    poll: float = 0.1,
) -> Passed:
    """Run the evaluation ``new`` now; :class:`Passed`, or ``EVALUATION_FAILED``."""
    factory = queue.db
    with factory() as db:
        evaluation_id = start_evaluation(db, new, caller, limits).id
        db.commit()
    queue.run_evaluation(evaluation_id)
    ended = _ended(factory, evaluation_id)
    while ended is None:  # cases another worker took: they end within a run's timeout
        time.sleep(poll)
        ended = _ended(factory, evaluation_id)
    status, rate = ended
    if status != "done" or rate < min_pass_rate:
        raise EvaluationFailedError(
            f"evaluation {evaluation_id} ended {status} with a pass rate of {rate:.2%}, "
            f"below {min_pass_rate:.2%}: nothing changed",
            details={
                "evaluation_id": evaluation_id,
                "status": status,
                "pass_rate": rate,
                "min_pass_rate": min_pass_rate,
            },
        )
    return Passed(evaluation_id, rate)
