"""The run service: prepare, execute and store a run of a stored app.

:meth:`RunService.prepare` checks the request against the stored app (it may
be private, name a flow this process does not serve, have too many runs going)
and records the run, in one transaction. :meth:`RunService.execute` drives the
app's :class:`~apps_yaml.runner.Runner` (a YAML app's steps or a Python flow:
the service never asks which), hands each event to the caller as it comes, and
stores the outcome in one more transaction (with the writes a caller adds to
it: an evaluation's result for its case), so a run whose caller went away is
still recorded (``cancelled``, with the output produced so far). Both block:
call them from a worker thread. :meth:`RunService.run_document` runs an app
document that is not stored (``appforge run app.yaml``) with the same wiring.

A run's timeout (the server's, or the app's own ``limits.timeout_seconds`` if
lower) sets its cancel event, which stops the model at its next token and a
template at its next loop item, call or output piece; the run then ends as
``timeout`` (``RUN_TIMEOUT``). A run whose output grows past
``limits.max_output_bytes`` is stopped and ends ``failed`` with
``OUTPUT_TOO_LARGE``, keeping only the output that came before.

One session runs one run at a time: a run asked for while another run of its
session is going is refused (409 ``SESSION_BUSY``, before the model is called),
so turns are numbered in order and each run sees the history before it. A run
is recorded with the id of the process executing it (``runs.recovery``), so a
run whose process died is failed ``INTERRUPTED`` instead of staying ``running``.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from appforge.core.db import failure_reason, once_more_if_ended, utcnow
from appforge.core.logs import run_context
from appforge.core.metrics import ACTIVE_RUNS, RUN_REFUSALS
from apps_yaml.engine import AppRunner
from apps_yaml.events import Chunk, Event, Failed, Outcome, Output
from apps_yaml.inputs import check_input
from apps_yaml.runner import HistoryTurn, Runner
from apps_yaml.schema import AppDocument
from providers.base import Cancel
from runs import records
from runs.deadlines import DeadlineWatcher
from runs.errors import (
    RunAuthError,
    RunConflictError,
    RunServiceError,
    SessionBusyError,
    SessionNotFoundError,
)
from runs.metrics import observe
from runs.output_meter import OutputMeter
from runs.overrides import RunOverrides, variant
from runs.services import Services
from runs.session_ids import new_session_id
from runs.tracing import RunTrace

log = logging.getLogger(__name__)

Emit = Callable[[Event], None]


def _refusal_reason(refused: RunServiceError) -> str:
    """The ``reason`` label of a refused run: ``app``, ``client`` or ``session``."""
    if isinstance(refused, SessionBusyError):
        return "session"
    return "client" if refused.details.get("per") == "client" else "app"


# Failures that mean "stopped": after the run's deadline they are its timeout.
_STOPPED = frozenset({"CANCELLED", "RENDER_TIMEOUT"})


@dataclass(frozen=True)
class Caller:
    """Who asks for a run: a token, by id and name, and its role."""

    token_id: str
    name: str
    role: str = "editor"

    @property
    def owner(self) -> str:
        """How the sessions this caller makes are owned."""
        return f"token:{self.token_id}"


ANONYMOUS = "anonymous"  # the owner of sessions made by callers without a token


@dataclass(frozen=True)
class RunRequest:
    """A request to run a stored app; ``caller`` None is an anonymous caller.

    ``history``: earlier turns the caller brings itself (an OpenAI-style message
    list), oldest first; given, they are the run's history instead of the
    session's, cut like a session's to the app's ``history`` depth.
    ``app_version`` runs an earlier definition of the app, and ``overrides``
    change its llm steps (``runs.overrides``; evaluations use both). ``run_id`` is the
    id to record the run under (an evaluation notes it on its case before the run).
    ``client`` is an anonymous caller's address: the runs it has going at once are
    limited (``runs.max_active_per_client``), over every app and API process.
    """

    app_uuid: str
    input: Any
    session_id: str | None = None
    stream: bool = False
    caller: Caller | None = None
    history: tuple[HistoryTurn, ...] | None = None
    app_version: int | None = None
    overrides: RunOverrides | None = None
    run_id: str | None = None
    client: str | None = None

    @property
    def role(self) -> str | None:
        """The caller's role (None: anonymous), which decides what a failure tells it."""
        return self.caller.role if self.caller is not None else None


@dataclass
class PreparedRun:
    """A recorded run, ready to execute."""

    run_id: str
    app_uuid: str
    app_name: str
    runner: Runner
    inputs: dict[str, Any]
    session_id: str
    history: list[HistoryTurn]
    timeout: float


@dataclass
class FinishedRun:
    """A stored run: what it produced, how long it took, and when it first answered."""

    run: PreparedRun
    outcome: Outcome
    latency_ms: float
    ttft_ms: float | None = None
    usage: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.usage = self.outcome.usage

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def failure(self) -> Failed | None:
        return self.outcome.failure


# Writes a caller stores with its finished run, in the transaction that stores the run
# (one commit for both, and neither without the other): an evaluation stores a case's
# result so. Called with the finished run before that transaction opens (slow work, such
# as scoring the run, happens outside it), it answers the writes to add, or None.
StoreWith = Callable[[FinishedRun], Callable[[Connection], None] | None]


class RunService:
    """Runs stored apps (and unstored documents) with the dependencies of ``services``."""

    def __init__(self, services: Services, process_id: str | None = None) -> None:
        self.services = services
        self.process_id = process_id  # recorded on each run: see runs.recovery
        self.deps = services.dependencies()
        self._documents = records.DocumentCache()
        self._deadlines = DeadlineWatcher()
        self._admission = threading.Lock()  # SQLite admissions, one at a time per process
        self._active: dict[str, Cancel] = {}  # run id -> its cancel event
        self._active_lock = threading.Lock()

    # --- stored apps ---------------------------------------------------------------

    def run(self, request: RunRequest, cancel: Cancel, emit: Emit | None) -> FinishedRun:
        """Prepare and execute in one call (one worker-thread hop for the caller)."""
        return self.execute(self.prepare(request), cancel, emit)

    def find_app(self, ref: str) -> records.AppRecord:
        """The stored app ``ref`` names, by uuid or by name (``APP_NOT_FOUND``,
        ``APP_AMBIGUOUS``)."""
        with self.services.engine.connect() as conn:
            return records.load_app(conn, records.find_app_uuid(conn, ref), self._documents)

    def prepare(self, request: RunRequest) -> PreparedRun:
        """Check the request and record the run (status ``running``); one transaction."""
        if request.session_id is not None:
            records.check_session_id(request.session_id)
        for attempt in (1, 2):
            try:
                return once_more_if_ended(lambda: self._prepare(request))
            except IntegrityError:
                # Two first runs of one new session: the loser finds the session now.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _prepare(self, request: RunRequest) -> PreparedRun:
        limits = self.services.settings.runs
        with self.services.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Reads each on their own, and one statement that admits the run: no
                # BEGIN or COMMIT round trips, and no lock held across one.
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            app = records.load_app(conn, request.app_uuid, self._documents)
            if request.app_version is not None or request.overrides:
                app = variant(
                    conn,
                    app,
                    request.app_version,
                    request.overrides,
                    self.services.db,
                    self._documents,
                )
            if not app.public and request.caller is None:
                raise RunAuthError(
                    "this app is not public: send 'Authorization: Token <token>'",
                    headers={"WWW-Authenticate": "Token"},
                )
            runner = self._runner(app.name, app.document)
            inputs = check_input(app.document, request.input)
            session_id, known = self._session(conn, request, app.uuid)
            history: list[HistoryTurn] = []
            if request.history is not None:
                history = list(request.history[-runner.history :]) if runner.history else []
            elif known and runner.history:
                history = records.load_history(conn, session_id, runner.history)
            timeout = min(limits.timeout_seconds, app.document.limits.timeout_seconds or math.inf)
            run_id = request.run_id or str(uuid.uuid4())
            self._admit(conn, request, app, run_id, (session_id, known), inputs, timeout)
        return PreparedRun(run_id, app.uuid, app.name, runner, inputs, session_id, history, timeout)

    def _admit(
        self,
        conn: Connection,
        request: RunRequest,
        app: records.AppRecord,
        run_id: str,
        session: tuple[str, bool],
        inputs: Mapping[str, Any],
        timeout: float,
    ) -> None:
        """Record the run (and a new session) unless the app has too many runs going
        (or its caller without a token has, or the session has one). On PostgreSQL one
        statement on a connection in autocommit does it all under the app's advisory
        lock (:func:`records.admit_at_once`); on SQLite one transaction under the
        database's write lock, the checks riding on the run's INSERT, and only a
        refused run counts again, to say why."""
        session_id, known = session
        limits = self.services.settings.runs
        most = min(limits.max_active_per_app, app.document.limits.max_active_runs or math.inf)
        caller = request.caller
        token_id = caller.token_id if caller is not None else None
        since = utcnow() - timedelta(seconds=timeout + 30)
        owner = caller.owner if caller is not None else ANONYMOUS
        client = self._client_limit(request)
        admission = records.Admission(int(most), since, known, owner, client)
        new = records.NewRun(
            run_id, app, session_id, token_id, request.stream, inputs, self.process_id
        )
        if conn.dialect.name == "postgresql":
            refused = records.admit_at_once(conn, new, admission)
        else:
            refused = self._admit_sqlite(conn, new, admission)
        if refused is not None:
            RUN_REFUSALS.labels(_refusal_reason(refused)).inc()
            raise refused

    def _admit_sqlite(
        self, conn: Connection, new: records.NewRun, admission: records.Admission
    ) -> RunServiceError | None:
        """SQLite's admission: one transaction under the database's write lock, which
        this process's threads take turns for here rather than in SQLite's busy loop."""
        app = new.app
        with self._admission:
            records.lock_app(conn, app)
            # No run starts while the lock is held, but runs may end: a refusal whose
            # reason is gone when it is looked for is tried again.
            for _ in range(3):
                if records.admit_run(conn, new, admission):
                    conn.commit()
                    return None
                refusal = records.refusal(conn, app.uuid, admission, new.session_id)
                if refusal is not None:
                    break
            conn.rollback()
        return refusal or records.too_many_runs(admission.most)

    def _client_limit(self, request: RunRequest) -> records.ClientLimit | None:
        """The limit on the runs a caller without a token has going at once, counted over
        every app and every API process by its address (as a keyed hash); None for
        callers with a token, or with the limit off. One client that opened streams
        without end held every place among a public app's active runs, and nobody
        else's run started."""
        limits = self.services.settings.runs
        if request.client is None or not limits.max_active_per_client:
            return None
        # Runs of any app count: older than the longest a run may take, they are dead.
        since = utcnow() - timedelta(seconds=limits.timeout_seconds + 30)
        key = self.services.key.hash_client(request.client)
        return records.ClientLimit(key, limits.max_active_per_client, since)

    @staticmethod
    def _session(conn: Connection, request: RunRequest, app_uuid: str) -> tuple[str, bool]:
        """The run's session id, and whether the session exists already.

        A caller continues only a session of this app that it may use: a runner or
        an anonymous caller only its own, an admin or editor any. Anything else is
        "no such session" (404), so a session's existence is not revealed. Only
        callers with a token choose new session ids; anonymous callers get one
        made here (190 random bits), which is then their key to continue it.
        """
        caller = request.caller
        if request.session_id is None:
            return new_session_id(), False
        found = records.load_session(conn, request.session_id)
        if found is None:
            if caller is None:
                raise SessionNotFoundError(
                    f"no session '{request.session_id}': a caller without a token cannot "
                    "choose a session id; run without one to get one",
                    details={"session_id": request.session_id},
                )
            return request.session_id, False
        app_of, owner = found
        mine = owner == (caller.owner if caller is not None else ANONYMOUS)
        trusted = caller is not None and caller.role in ("admin", "editor")
        if app_of != app_uuid or not (mine or trusted):
            raise SessionNotFoundError(
                f"no session '{request.session_id}'", details={"session_id": request.session_id}
            )
        return request.session_id, True

    def _runner(self, app_name: str, doc: AppDocument) -> Runner:
        if doc.flow is None:
            return AppRunner(doc)
        flow = self.services.flows.get(doc.flow)
        if flow is None:  # saved by a process that served it, since stopped
            raise RunConflictError(
                f"app '{app_name}' runs the Python flow '{doc.flow}', which this server"
                " does not serve: serve it with `appforge run <flow file> --serve`",
                code="FLOW_NOT_SERVED",
                details={"flow": doc.flow},
            )
        return flow

    def execute(
        self,
        run: PreparedRun,
        cancel: Cancel,
        emit: Emit | None,
        store_with: StoreWith | None = None,
    ) -> FinishedRun:
        """Drive the run to its end, handing each event to ``emit``; store it, with the
        writes ``store_with`` adds (see :data:`StoreWith`).

        While it runs, :meth:`cancel_all` (a shutdown past its grace) stops it."""
        with self._active_lock:
            self._active[run.run_id] = cancel
        ACTIVE_RUNS.inc()
        tracing = self.services.tracing
        trace = RunTrace(tracing, run) if tracing.enabled else None
        finished: FinishedRun | None = None
        try:
            with run_context(run.run_id, run.app_uuid):
                finished = self._execute(run, cancel, emit, trace, store_with)
        finally:
            ACTIVE_RUNS.dec()
            with self._active_lock:
                self._active.pop(run.run_id, None)
            if trace is not None:
                trace.end(finished)
        observe(finished)
        return finished

    @property
    def active(self) -> int:
        """How many runs this process is executing now."""
        return len(self._active)

    def cancel_all(self) -> int:
        """Cancel every run executing in this process (they end ``cancelled``); how many."""
        with self._active_lock:
            events = list(self._active.values())
        for event in events:
            event.set()
        return len(events)

    def _execute(
        self,
        run: PreparedRun,
        cancel: Cancel,
        emit: Emit | None,
        trace: RunTrace | None,
        store_with: StoreWith | None,
    ) -> FinishedRun:
        started = time.perf_counter()
        outcome = Outcome()
        ttft: float | None = None
        events = self._events(
            run.runner, run.inputs, run.session_id, run.history, run.timeout, cancel
        )
        for event in events:
            if ttft is None and isinstance(event, Chunk | Output):
                ttft = (time.perf_counter() - started) * 1000
            outcome.add(event)
            if trace is not None:
                trace.event(event)
            if emit is not None:
                emit(event)
        finished = FinishedRun(run, outcome, (time.perf_counter() - started) * 1000, ttft)
        try:
            self._store(finished, store_with)
        except Exception as exc:
            reason = failure_reason(exc)  # the disk, the database: said without a traceback
            if reason is not None:
                log.warning("storing run %s failed: %s", run.run_id, reason)
            else:
                log.exception("storing run %s failed", run.run_id)
            self._store_crash(run.run_id)
            raise
        log.info(
            "run app=%s run=%s status=%s ms=%.0f tokens=%d",
            run.app_uuid,
            run.run_id,
            outcome.status,
            finished.latency_ms,
            outcome.usage.get("total_tokens", 0),
        )
        return finished

    def _store(self, finished: FinishedRun, store_with: StoreWith | None) -> None:
        run = finished.run
        extra = store_with(finished) if store_with is not None else None
        done = records.Finish(
            run.run_id,
            run.session_id,
            run.inputs,
            finished.outcome,
            finished.latency_ms,
            finished.ttft_ms,
        )

        at_once = (
            extra is None
            and not finished.outcome.prompts
            and self.services.engine.dialect.name == "postgresql"
        )

        def store(turn: bool) -> None:
            if at_once:  # one autocommitted statement
                with self.services.engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    records.store_at_once(conn, done, turn=turn)
                return
            with self.services.engine.begin() as conn:
                records.store_finished(conn, done, turn=turn)
                if extra is not None:
                    extra(conn)

        for attempt in range(3):
            try:
                # A turn number that raced twice: store the run without its turn rather
                # than leave it ``running`` with its output thrown away. A database that
                # restarted while the run went on is met here: its output is kept.
                once_more_if_ended(functools.partial(store, attempt < 2))
                if attempt == 2:
                    log.warning("run %s stored without its session turn", run.run_id)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def _store_crash(self, run_id: str) -> None:
        """Best effort after storing a run failed: do not leave it ``running``."""
        try:
            with self.services.engine.begin() as conn:
                records.fail_run(conn, run_id, "INTERNAL_ERROR", "storing the run failed")
        except Exception as exc:
            if failure_reason(exc) is None:  # else said already
                log.exception("could not mark run %s failed", run_id)

    # --- any runner ------------------------------------------------------------------

    def run_document(
        self, doc: AppDocument, given: Any, cancel: Cancel | None = None
    ) -> Generator[Event, None, None]:
        """Run an app document that is not stored (nothing is recorded); its inputs are
        checked first (``INPUT_INVALID``)."""
        runner = self._runner(doc.name, doc)
        inputs = check_input(doc, given)
        timeout = min(
            self.services.settings.runs.timeout_seconds,
            doc.limits.timeout_seconds or math.inf,
        )
        return self._events(runner, inputs, None, [], timeout, cancel or Cancel())

    def _events(
        self,
        runner: Runner,
        inputs: Mapping[str, Any],
        session_id: str | None,
        history: list[HistoryTurn],
        timeout: float,
        cancel: Cancel,
    ) -> Generator[Event, None, None]:
        """The runner's events, under the run's deadline; a crash becomes a failure."""
        timed_out = threading.Event()

        def time_up() -> None:
            timed_out.set()
            cancel.set()

        deadline = self._deadlines.watch(timeout, time_up)
        ends_at = time.monotonic() + timeout
        cancel.deadline = ends_at  # model calls bound their waits by it
        events = runner.run(
            inputs, self.deps, session_id=session_id, history=history, cancel=cancel
        )
        output = OutputMeter(self.services.settings.limits.max_output_bytes)
        try:
            for event in events:
                late = timed_out.is_set() or time.monotonic() >= ends_at  # any failure then
                if isinstance(event, Failed) and late:
                    event = Failed(
                        "RUN_TIMEOUT", f"the run took longer than {timeout:g} s", event.step, 504
                    )
                elif isinstance(event, Failed) and event.code in _STOPPED and cancel.is_set():
                    event = Failed("CANCELLED", "the run was cancelled", event.step, 499)
                elif isinstance(event, Chunk | Output) and not output.fits(event):
                    cancel.set()  # the runner stops (its model at the next token)
                    yield output.failure()
                    return
                yield event
        except Exception:  # the runners report step errors themselves; this is a bug
            log.exception("a run crashed")
            yield Failed("INTERNAL_ERROR", "internal error while running the app")
        finally:
            deadline.cancel()
            events.close()
