"""The evaluation workers: each claims one case of an evaluation, runs it through the
run service, scores it, and stores its result under its claim.

The queue is the ``evaluation_cases`` table, run by the one lease queue
(``appforge.core.queue``). A case is claimable when it is ``pending``, or
``running`` while its worker is gone: its lease ran out (the lease outlasts
the longest run, ``APPFORGE_RUNS__TIMEOUT_SECONDS``), or the API process that
claimed it no longer has its row in ``processes`` (``runs.recovery`` removes dead
processes at start-up, so a restarted server takes their cases at once). An
evaluation's ``concurrency`` caps how many of its cases run at once.

No case is lost or has two results: a result is written only under the claim
it was run with, so a worker that lost its claim (the case was cancelled, or
taken over) writes nothing. The id of a case's run is stored before the run
starts: the claim itself gives a case without one a fresh id, which the run is
recorded under (no write of its own). A worker that takes the case over and finds
that run finished (its worker died before writing the result) scores that run
instead of running the case again; if the run never started or was interrupted, it
notes a new id before running the case (the one extra write, on this rare path).

A case's scored result is written in the transaction that stores its run (the run
service's ``store_with``): one commit per case, not two. The worker that writes the
last result ends the evaluation ``done``: each worker looks whether the evaluations
it wrote results of have open cases left at its next claim, unless that claim took
a case of the same evaluation (then it has one). A worker killed between storing the
last result and that look leaves its evaluation open with no open case: every
process ends such evaluations when its queue starts and, while idle, once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from sqlalchemy import (
    Connection,
    and_,
    update,
)
from sqlalchemy.engine import CursorResult

from appforge.core.db import transaction, utcnow
from appforge.core.errors import AppforgeError
from appforge.core.queue import Claimed, LeaseQueue, LeaseTable
from appforge.core.workers import Workers
from evals.claims import CASES, OPEN, OPEN_CASE, RUN_ID, STRANDED, claimable
from evals.judge import Judge
from evals.scorers import CaseRun, Score, ScorerSpec, score_case
from evals.tables import Evaluation, EvaluationCase
from providers.base import Cancel
from runs.errors import (
    AppNotFoundError,
    AppVersionNotFoundError,
    RunAuthError,
    RunConflictError,
    TooManyRunsError,
)
from runs.overrides import PromptPin, RunOverrides
from runs.recovery import INTERRUPTED
from runs.service import Caller, FinishedRun, RunRequest, RunService
from runs.tables import Run

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
_CLAIM_TRIES = 8  # claims in a row a worker makes while others take the rows it saw
_SWEEP_SECONDS = 60.0  # how often an idle claim looks for stranded evaluations
_PLANS_KEPT = 64  # evaluations whose plan a process keeps in memory
_BUSY_PAUSE = 0.5  # seconds a worker waits after the app refused a run (too many going)
# Failures of the app itself, not of a case: the evaluation fails.
_FATAL = (AppNotFoundError, AppVersionNotFoundError, RunAuthError, RunConflictError)


@dataclass(frozen=True)
class Plan:
    """How an evaluation runs each case."""

    id: str
    app_uuid: str
    app_version: int | None
    overrides: RunOverrides
    scorers: list[ScorerSpec]
    output_keys: list[str]
    caller: Caller


def overrides_of(stored: dict[str, Any]) -> RunOverrides:
    """The run overrides an evaluation stored (as its API body gave them)."""
    prompts = {
        ref: PromptPin(pin.get("label"), pin.get("version"))
        for ref, pin in (stored.get("prompts") or {}).items()
    }
    return RunOverrides(prompts, stored.get("model"), stored.get("params") or {})


class EvaluationQueue:
    """Claims and runs evaluation cases; ``start`` runs it in background threads."""

    def __init__(self, runs: RunService, process_id: str | None = None) -> None:
        self.runs = runs
        self.services = runs.services
        self.db = runs.services.db
        self.process_id = process_id
        settings = self.services.settings
        lease = settings.runs.timeout_seconds + 60
        self.queue = LeaseQueue(self.db, CASES, lease)
        self.judge = Judge(self.db, self.services.models)
        self.workers = Workers("evals", lambda _: self.run_once(), settings.evals.poll_seconds)
        self._active: dict[int, tuple[str, Cancel]] = {}
        self._lock = threading.Lock()
        self._busy = threading.local()  # whether this thread's last claim found a case
        self._plans: dict[str, Plan] = {}  # of running evaluations (they do not change)
        # claim token -> the run id that claim gave its case (the case had none)
        self._new_runs: dict[str, str] = {}
        # evaluations with a result written since the last look at whether any case of
        # theirs is open (see _look_for_done)
        self._unlooked: set[str] = set()
        self._sweep_at = 0.0  # when an idle claim next ends stranded evaluations

    # --- one case ----------------------------------------------------------------------

    def claim(self) -> EvaluationCase | None:
        """Take the oldest claimable case for this worker, if any."""
        busy = getattr(self._busy, "value", False)
        for _ in range(_CLAIM_TRIES):
            # The cheap look first keeps idle polls out of write transactions; a worker
            # that just found a case goes straight to the claim.
            if not busy and not self.queue.has_claimable():
                break
            claimed = self._claim_one(self.queue)
            if claimed is not None:
                self._busy.value = True
                self._look_for_done(claimed)
                return claimed
            # Another worker took the row between this claim's look and its update (on
            # SQLite, where rows are not locked): look again now, not a poll later.
            busy = False
        self._busy.value = False
        self._look_for_done(None)
        if time.monotonic() >= self._sweep_at:
            self.end_stranded()
        return None

    def run_once(self) -> bool:
        """Claim and work one case; whether there was one."""
        case = self.claim()
        if case is None:
            return False
        self.work(case)
        return True

    def run_evaluation(self, evaluation_id: str) -> None:
        """Work this evaluation's claimable cases in the calling thread (a gated change)."""
        only = LeaseTable(
            EvaluationCase,
            "id",
            lambda now: and_(claimable(now), EvaluationCase.evaluation_id == evaluation_id),
            "id",
            "running",
        )
        mine = LeaseQueue(self.db, only, self.queue.lease.total_seconds())
        while claimed := self._claim_one(mine):
            self._look_for_done(claimed)
            self.work(claimed)
        self._look_for_done(None)

    def _claim_one(self, queue: LeaseQueue) -> EvaluationCase | None:
        """One case claimed in one statement; a case without a run id gets a fresh one in
        the same write (its run is recorded under it, see :meth:`_run`)."""
        fresh = str(uuid.uuid4())
        case: EvaluationCase | None = queue.claim_one(
            params={"claim_run_id": fresh}, process_id=self.process_id, run_id=RUN_ID
        )
        if case is not None and case.run_id == fresh and case.claim_token is not None:
            with self._lock:
                self._new_runs[case.claim_token] = fresh
        return case

    def work(self, case: EvaluationCase) -> None:
        """Run, score and store one claimed case (a lost claim stores nothing)."""
        plan = self._plan(case.evaluation_id)
        if plan is None:
            return
        cancel = Cancel()
        with self._lock:
            self._active[case.id] = (plan.id, cancel)
        try:
            self._work(case, plan, cancel)
        finally:
            with self._lock:
                self._active.pop(case.id, None)
                self._new_runs.pop(case.claim_token or "", None)

    def _work(self, case: EvaluationCase, plan: Plan, cancel: Cancel) -> None:
        if case.attempts > MAX_ATTEMPTS:  # its worker died each time: do not try forever
            message = f"gave up after {MAX_ATTEMPTS} attempts (the worker stopped each time)"
            run = _failed_case(AppforgeError(message, code="EVALUATION_CASE_FAILED"))
        else:
            try:
                found = self._finished_run(case)
                if found is None:
                    self._run(case, plan, cancel)  # its result is stored with the run
                    return
                run = found
            except TooManyRunsError:
                self._release(case)  # the app is busy: the case waits for its turn
                self.workers.stopping.wait(_BUSY_PAUSE)
                return
            except _FATAL as exc:
                self.fail_evaluation(plan.id, exc.code, exc.message)
                return
            except AppforgeError as exc:  # this case's input, say: the case fails
                run = _failed_case(exc)
        if cancel.is_set() and run[1].status == "cancelled":
            self._release(case)
            return
        run_id, seen = run
        result = self._result(case, plan, run_id, seen, cancel)
        if cancel.is_set():  # stopped while scoring: a score cut short is not a result
            self._release(case)
            return
        updates = {case.id: Claimed(case.claim_token, result)}
        if not self.queue.write(updates):
            self._written(plan.id)

    def _result(
        self, case: EvaluationCase, plan: Plan, run_id: str | None, seen: CaseRun, cancel: Cancel
    ) -> dict[str, Any]:
        """The case's scored result, as its row stores it. A judge's model call stops when
        ``cancel`` is set (with a cancel of its own: the run's carries the run's deadline)."""
        seen = _seen_with(seen, case, plan)
        judging = Cancel()
        forget = cancel.when_set(judging.set)
        try:
            scores = [self._score(spec, seen, judging) for spec in plan.scorers]
        finally:
            forget()
        return {
            "status": "done",
            "run_id": run_id,
            "output": seen.output,
            "scores": [s.as_json() for s in scores],
            "passed": all(s.passed for s in scores),
            "latency_ms": seen.latency_ms,
            "tokens": seen.tokens,
            "error": seen.error,
        }

    def _score(self, spec: ScorerSpec, seen: CaseRun, cancel: Cancel) -> Score:
        """One scorer's verdict; a scorer that breaks fails (the case is still stored)."""
        try:
            return score_case(spec, seen, self._embed, partial(self.judge, cancel=cancel))
        except Exception as exc:  # a bug or a broken model: keep the worker and the case
            log.exception("scorer %s failed", spec.key)
            return Score(spec.key, 0.0, False, f"the scorer failed: {type(exc).__name__}")

    def _plan(self, evaluation_id: str) -> Plan | None:
        """How to run the cases of this evaluation; None once it ended. Read once per
        evaluation (a case of one that ended is cancelled, and its claim with it)."""
        with self._lock:
            known = self._plans.get(evaluation_id)
        if known is not None:
            return known
        with self.db() as db:
            row = db.get(Evaluation, evaluation_id)
            if row is None or row.status not in ("queued", "running"):
                return None
            if row.status == "queued":
                db.execute(
                    update(Evaluation)
                    .where(Evaluation.id == row.id, Evaluation.status == "queued")
                    .values(status="running", started_at=utcnow())
                )
                db.commit()
            caller = Caller(row.token_id or "evaluation", row.token_name or "", row.token_role)
            plan = Plan(
                row.id,
                row.app_uuid,
                row.app_version,
                overrides_of(row.overrides),
                [ScorerSpec.model_validate(s) for s in row.scorers],
                list(row.output_keys),
                caller,
            )
        with self._lock:
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.pop(next(iter(self._plans)))
            self._plans[evaluation_id] = plan
        return plan

    def _finished_run(self, case: EvaluationCase) -> tuple[str | None, CaseRun] | None:
        """The run an earlier claim of this case started, if it ended (not interrupted)."""
        with self._lock:
            fresh = self._new_runs.get(case.claim_token or "")
        if case.run_id is None or case.run_id == fresh:  # none, or this claim's: not run yet
            return None
        with self.db() as db:
            row = db.get(Run, case.run_id)
            if row is None or row.status == "running":
                return None
            if row.status == "failed" and (row.error or {}).get("code") == INTERRUPTED:
                return None
            tokens = int((row.usage or {}).get("total_tokens", 0))
            seen = CaseRun({}, {}, row.output, [], row.status, row.error, row.latency_ms, tokens)
            return row.id, seen

    def _run(self, case: EvaluationCase, plan: Plan, cancel: Cancel) -> None:
        """Run the case and store its scored result in the transaction that stores the
        run (one commit: a run stored for a case always has its result, unless the claim
        was lost); a cancelled run gives the case back to the queue."""
        with self._lock:
            noted = self._new_runs.pop(case.claim_token or "", None)
        run_id = noted if noted is not None and noted == case.run_id else str(uuid.uuid4())
        # Noted before it runs: a worker taking this case over scores this run if it ends.
        # This claim noted it already unless an earlier claim's run never ended.
        if noted != run_id and self.queue.write(
            {case.id: Claimed(case.claim_token, {"run_id": run_id})}
        ):
            return  # the claim is lost: the case is someone else's
        request = RunRequest(
            plan.app_uuid,
            case.input,
            caller=plan.caller,
            app_version=plan.app_version,
            overrides=plan.overrides,
            run_id=run_id,
        )
        prepared = self.runs.prepare(request)
        updates: dict[int, Claimed] = {}
        lost: set[int] = set()

        def with_result(finished: FinishedRun) -> Callable[[Connection], None] | None:
            if cancel.is_set() and finished.status == "cancelled":
                return None  # stopped (shutdown, or the evaluation ended): not a result
            seen = _seen_of(finished)
            result = self._result(case, plan, run_id, seen, cancel)
            if cancel.is_set():
                return None  # stopped while scoring: the stored run is scored again later
            updates[case.id] = Claimed(case.claim_token, result)

            def write(conn: Connection) -> None:
                lost.clear()
                lost.update(self.queue.write_on(conn, updates))

            return write

        self.runs.execute(prepared, cancel, None, store_with=with_result)
        if not updates:
            self._release(case)
            return
        self.queue.settle(updates, lost)
        if not lost:
            self._written(plan.id)

    def _embed(self, texts: list[str]) -> Any:
        # The datasources' embedder: the one MiniLM instance of this process.
        return self.services.datasources.embedder.encode(texts)

    def _release(self, case: EvaluationCase) -> None:
        """Give the case back to the queue (pending) unless the claim is lost."""
        self.queue.write({case.id: Claimed(case.claim_token, {"status": "pending"})})

    # --- evaluations -------------------------------------------------------------------

    def _written(self, evaluation_id: str) -> None:
        """A result of this evaluation was stored: its next look for done includes it."""
        with self._lock:
            self._unlooked.add(evaluation_id)

    def _look_for_done(self, claimed: EvaluationCase | None) -> None:
        """After a claim: end ``done`` each evaluation with a result stored since the last
        look that has no open case left.

        Looked at after a claim rather than after each result, which spares the look
        while an evaluation has cases left: a claim that took a case of an evaluation
        says it is not done, and that case's result brings the look back. Every stored
        result is followed by a look (the next claim of the worker that stored it, at
        the latest), so the worker of the last one ends the evaluation as before."""
        skip = claimed.evaluation_id if claimed is not None else None
        with self._lock:
            if not self._unlooked:
                return
            looks = [e for e in self._unlooked if e != skip]
            self._unlooked.clear()
        for evaluation_id in looks:
            self._finish_if_complete(evaluation_id)

    def _finish_if_complete(self, evaluation_id: str) -> None:
        """End the evaluation ``done`` if no case of it is open."""
        with self.services.engine.connect() as conn:
            still_open = conn.execute(OPEN_CASE, {"e_id": evaluation_id}).first()
        if still_open is not None:
            return
        with transaction(self.db) as db:
            db.execute(
                update(Evaluation)
                .where(Evaluation.id == evaluation_id, Evaluation.status.in_(("queued", "running")))
                .values(status="done", finished_at=utcnow())
            )
        self._forget(evaluation_id)

    def end_stranded(self) -> int:
        """End ``done`` the evaluations left open with no open case (their last worker
        died between storing the last result and its next look); how many. Run at start
        and by an idle claim at most every ``_SWEEP_SECONDS``."""
        self._sweep_at = time.monotonic() + _SWEEP_SECONDS
        with transaction(self.db) as db:
            result = cast("CursorResult[Any]", db.execute(STRANDED, {"now": utcnow()}))
            ended = result.rowcount
        if ended:
            log.info("ended %d evaluation(s) whose last worker died before ending them", ended)
        return int(ended)

    def _forget(self, evaluation_id: str) -> None:
        with self._lock:
            self._plans.pop(evaluation_id, None)

    def fail_evaluation(self, evaluation_id: str, code: str, message: str) -> None:
        """End an evaluation ``failed``: its open cases are cancelled with the error."""
        error = {"code": code, "message": message}
        with transaction(self.db) as db:
            db.execute(
                update(Evaluation)
                .where(Evaluation.id == evaluation_id, Evaluation.status.in_(("queued", "running")))
                .values(status="failed", error=error, finished_at=utcnow())
            )
            cancel_cases(db, evaluation_id, error)
        self._forget(evaluation_id)
        self.stop_cases(evaluation_id)
        log.info("evaluation %s failed: %s", evaluation_id, code)

    def stop_cases(self, evaluation_id: str) -> None:
        """Stop the runs of this evaluation's cases going on in this process."""
        with self._lock:
            for owner, cancel in self._active.values():
                if owner == evaluation_id:
                    cancel.set()

    # --- threads -----------------------------------------------------------------------

    def wake(self) -> None:
        self.workers.wake()

    def start(self, workers: int) -> None:
        self.end_stranded()
        self.workers.start(workers)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads; the cases they were running go back to ``pending``."""
        self.workers.stopping.set()
        with self._lock:
            for _, cancel in self._active.values():
                cancel.set()
        self.workers.stop(timeout)
        self._look_for_done(None)  # a result stored just before the stop


def cancel_cases(db: Any, evaluation_id: str, error: dict[str, Any] | None) -> None:
    db.execute(
        update(EvaluationCase)
        .where(EvaluationCase.evaluation_id == evaluation_id, EvaluationCase.status.in_(OPEN))
        .values(
            status="cancelled", claim_token=None, lease_until=None, error=error, updated_at=utcnow()
        )
    )


def _failed_case(exc: AppforgeError) -> tuple[str | None, CaseRun]:
    error = {"code": exc.code, "message": exc.message}
    return None, CaseRun({}, {}, {}, [], "failed", error)


def _seen_of(finished: FinishedRun) -> CaseRun:
    """What the scorers see of a finished run (the case's parts are added by
    :func:`_seen_with`)."""
    failure = finished.failure
    error = None if failure is None else {"code": failure.code, "message": failure.message}
    tokens = int(finished.usage.get("total_tokens", 0))
    output = finished.outcome.output
    return CaseRun({}, {}, output, [], finished.status, error, finished.latency_ms, tokens)


def _seen_with(seen: CaseRun, case: EvaluationCase, plan: Plan) -> CaseRun:
    """The run as seen, with the case's input and expected answer and the app's keys."""
    return CaseRun(
        case.input,
        case.expected,
        seen.output,
        plan.output_keys,
        seen.status,
        seen.error,
        seen.latency_ms,
        seen.tokens,
    )
