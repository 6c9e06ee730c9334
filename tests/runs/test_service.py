"""The run service on its own (no FastAPI): real SQLite, the real local model."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select

from appforge.core.db import utcnow
from appforge.core.settings import Settings
from apps_yaml.errors import InputInvalidError
from apps_yaml.events import Chunk, Event, Output, StepFinished
from apps_yaml.flows import Flow, StepContext, StepResult
from apps_yaml.loader import load_text
from providers.base import Cancel
from runs.deadlines import DeadlineWatcher
from runs.errors import (
    AppNotFoundError,
    RunAuthError,
    RunConflictError,
    SessionBusyError,
    SessionNotFoundError,
    TooManyRunsError,
)
from runs.records import stored_document
from runs.service import Caller, RunRequest, RunService
from runs.services import Services
from runs.tables import App, ChatSession, Run, Turn

CHAT = """\
name: Echo
type: chat
input:
  q: {type: string, required: true}
steps:
  - id: a
    kind: llm
    prompt: {system: Be brief., user: "{{ input.q }}"}
    history: 4
    params: {temperature: 0, seed: 3, max_tokens: 6}
output:
  a: "{{ a.text }}"
  n: "{{ a.usage.completion_tokens }}"
"""
ME = Caller("token-1", "tester")

shout = Flow("shout", input={"word": {"type": "string", "required": True}})


@shout.step("up", initial=True)
def _up(ctx: StepContext, word: str) -> StepResult:
    return StepResult(loud=word.upper() + "!")


@pytest.fixture
def services(tmp_path: Path, local_provider: Any) -> Iterator[Services]:
    opened = Services.open(
        Settings(home=tmp_path / "home"),
        providers={"local": local_provider},
        flows={"shout": shout},
    )
    yield opened
    opened.close()


def _store(services: Services, text: str, public: bool = False) -> str:
    """Save an app the way the API does (the service only runs stored apps)."""
    doc = load_text(text)
    app_uuid = str(uuid.uuid4())
    document = stored_document(doc)
    with services.engine.begin() as conn:
        conn.execute(
            insert(App).values(
                uuid=app_uuid,
                name=doc.name,
                description="",
                type=doc.type,
                public=public,
                version=1,
                yaml=text,
                document=document,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    return app_uuid


def _count(services: Services, table: Any) -> int:
    with services.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_service_runs_yaml_apps_and_flows_alike_and_stores_them(services: Services):
    service = RunService(services)
    yaml_app = _store(services, CHAT)
    flow_app = _store(services, "name: shout\nflow: shout\ninput:\n  word: {type: string}\n")
    seen: list[Event] = []
    first = service.run(
        RunRequest(yaml_app, {"q": "Hi"}, caller=ME), threading.Event(), seen.append
    )
    second = service.run(RunRequest(flow_app, {"word": "hey"}, caller=ME), threading.Event(), None)
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert second.outcome.output == {"loud": "HEY!"}
    streamed = "".join(e.text for e in seen if isinstance(e, Chunk))
    assert streamed == first.outcome.output["a"]
    assert [e.key for e in seen if isinstance(e, Output)] == ["n"]
    assert any(isinstance(e, StepFinished) for e in seen)
    with services.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(Run.id, Run.status, Run.output, Run.usage))}
    assert rows[first.run.run_id].status == "succeeded"
    assert rows[first.run.run_id].output == first.outcome.output
    assert rows[second.run.run_id].output == {"loud": "HEY!"}
    assert rows[first.run.run_id].usage["completion_tokens"] > 0


def test_service_session_history_reaches_the_next_turn(services: Services):
    service = RunService(services)
    app = _store(services, CHAT)
    one = service.run(RunRequest(app, {"q": "Say one."}, caller=ME), threading.Event(), None)
    session = one.run.session_id
    two = service.run(
        RunRequest(app, {"q": "Say two."}, session_id=session, caller=ME), threading.Event(), None
    )
    messages = two.outcome.steps[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert (
        messages[1]["content"] == "Say one." and messages[2]["content"] == one.outcome.output["a"]
    )
    assert _count(services, Turn) == 2


def test_service_refuses_before_storing_anything(services: Services):
    service = RunService(services)
    app = _store(services, CHAT)
    cancel = threading.Event()
    with pytest.raises(RunAuthError):  # a private app, no caller
        service.run(RunRequest(app, {"q": "x"}), cancel, None)
    with pytest.raises(InputInvalidError):
        service.run(RunRequest(app, {"q": 3}, caller=ME), cancel, None)
    with pytest.raises(AppNotFoundError):
        service.run(RunRequest(str(uuid.uuid4()), {}, caller=ME), cancel, None)
    other = _store(services, CHAT.replace("Echo", "Other"))
    done = service.run(RunRequest(other, {"q": "x"}, caller=ME), cancel, None)
    with pytest.raises(SessionNotFoundError):  # another app's session: not revealed
        service.run(RunRequest(app, {"q": "x"}, done.run.session_id, caller=ME), cancel, None)
    assert _count(services, Run) == 1


def test_service_admission_refusals_store_nothing_on_either_backend(
    tmp_path: Path, backend: str | None
):
    values: dict[str, Any] = {"home": tmp_path / "home"}
    if backend is not None:
        values["database_url"] = backend
    services = Services.open(Settings(**values))  # admission only: no model is called
    try:
        service = RunService(services)
        one_at_once = CHAT.replace("output:", "limits: {max_active_runs: 1}\noutput:")
        app = _store(services, one_at_once)
        first = service.prepare(RunRequest(app, {"q": "x"}, caller=ME))  # recorded, running
        with pytest.raises(TooManyRunsError) as refused:
            service.prepare(RunRequest(app, {"q": "x"}, "new-session", caller=ME))
        assert refused.value.message == "this app already has 1 runs going (limit 1)"
        roomy = _store(services, CHAT.replace("Echo", "Roomy"))
        mine = service.prepare(RunRequest(roomy, {"q": "x"}, "mine", caller=ME))
        with pytest.raises(SessionBusyError):
            service.prepare(RunRequest(roomy, {"q": "x"}, "mine", caller=ME))
        # Only the admitted runs and their sessions exist: the refused left nothing.
        with services.engine.connect() as conn:
            runs = set(conn.scalars(select(Run.id)))
            sessions = set(conn.scalars(select(ChatSession.id)))
        assert runs == {first.run_id, mine.run_id}
        assert sessions == {first.session_id, "mine"}
    finally:
        services.close()


def test_service_admissions_at_the_same_time_never_pass_the_limits(
    tmp_path: Path, backend: str | None
):
    """Admissions racing each other, from many threads and connections: an app's limit,
    a caller's without a token and a session's one run at once all hold exactly. On
    PostgreSQL each is one statement that counts after taking the app's lock (and the
    caller's), so a run admitted while it waited for the lock is counted."""
    values: dict[str, Any] = {"home": tmp_path / "home", "runs": {"max_active_per_client": 2}}
    if backend is not None:
        values["database_url"] = backend
    services = Services.open(Settings(**values))  # admission only: no model is called
    try:
        service = RunService(services)
        three = _store(services, CHAT.replace("output:", "limits: {max_active_runs: 3}\noutput:"))
        public = _store(services, CHAT.replace("Echo", "Open"), public=True)
        roomy = _store(services, CHAT.replace("Echo", "Roomy"))
        service.prepare(RunRequest(roomy, {"q": "x"}, "shared", caller=ME))
        service.cancel_all()  # nothing executes: the run stays "running"
        requests = (
            [RunRequest(three, {"q": "x"}, caller=ME) for _ in range(10)]
            + [RunRequest(public, {"q": "x"}, client="203.0.113.7") for _ in range(8)]
            + [RunRequest(roomy, {"q": "x"}, "shared", caller=ME) for _ in range(6)]
        )
        start = threading.Barrier(len(requests))
        outcomes: list[tuple[str, str]] = []

        def admit(request: RunRequest) -> None:
            start.wait()
            try:
                service.prepare(request)
                outcomes.append((request.app_uuid, "in"))
            except (TooManyRunsError, SessionBusyError) as exc:
                outcomes.append((request.app_uuid, exc.code))

        threads = [threading.Thread(target=admit, args=(r,)) for r in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert len(outcomes) == len(requests)
        got = {app: sorted(o for a, o in outcomes if a == app) for app in (three, public, roomy)}
        assert got[three] == ["TOO_MANY_ACTIVE_RUNS"] * 7 + ["in"] * 3
        assert got[public] == ["TOO_MANY_ACTIVE_RUNS"] * 6 + ["in"] * 2
        assert got[roomy] == ["SESSION_BUSY"] * 6
        with services.engine.connect() as conn:
            going = dict(
                conn.execute(select(Run.app_uuid, func.count()).group_by(Run.app_uuid)).all()
            )
        assert going == {three: 3, public: 2, roomy: 1}
    finally:
        services.close()


def test_service_run_of_an_app_deleted_while_it_ran_leaves_nothing(
    tmp_path: Path, backend: str | None, local_provider: Any, caplog: pytest.LogCaptureFixture
):
    """The app goes (its runs and sessions with it) while a run of it is going: the run
    ends, and storing it adds nothing: no turn for a session that is gone, no error."""
    values: dict[str, Any] = {"home": tmp_path / "home"}
    if backend is not None:
        values["database_url"] = backend
    services = Services.open(Settings(**values), providers={"local": local_provider})
    try:
        service = RunService(services)
        app = _store(services, CHAT)
        prepared = service.prepare(RunRequest(app, {"q": "hi"}, caller=ME))
        with services.engine.begin() as conn:
            conn.execute(delete(App).where(App.uuid == app))
        with caplog.at_level("WARNING"):
            finished = service.execute(prepared, Cancel(), None)
        assert finished.status == "succeeded"
        assert [_count(services, t) for t in (Run, Turn, ChatSession)] == [0, 0, 0]
        assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    finally:
        services.close()


def test_service_public_app_runs_anonymously(services: Services):
    service = RunService(services)
    app = _store(services, CHAT, public=True)
    done = service.run(RunRequest(app, {"q": "Hi"}), threading.Event(), None)
    assert done.status == "succeeded"


def test_service_cancelled_run_is_stored_with_what_it_wrote(services: Services):
    service = RunService(services)
    app = _store(services, CHAT.replace("max_tokens: 6", "max_tokens: 64"))
    cancel = threading.Event()
    pieces: list[str] = []

    def emit(event: Event) -> None:
        if isinstance(event, Chunk):
            pieces.append(event.text)
            cancel.set()  # stop after the first piece

    done = service.run(RunRequest(app, {"q": "Count to fifty."}, caller=ME), cancel, emit)
    assert done.status == "cancelled"
    assert done.outcome.output["a"] == "".join(pieces)
    with services.engine.connect() as conn:
        stored = conn.execute(select(Run.status, Run.output).where(Run.id == done.run.run_id)).one()
    assert stored.status == "cancelled" and stored.output == done.outcome.output


def test_service_unserved_flow_is_a_conflict(tmp_path: Path, local_provider: Any):
    services = Services.open(Settings(home=tmp_path / "h2"), providers={"local": local_provider})
    try:
        app = _store(services, "name: shout\nflow: shout\ninput:\n  word: {type: string}\n")
        with pytest.raises(RunConflictError) as info:
            RunService(services).run(RunRequest(app, {}, caller=ME), threading.Event(), None)
        assert info.value.code == "FLOW_NOT_SERVED"
    finally:
        services.close()


def test_service_run_document_stores_nothing(services: Services):
    service = RunService(services)
    events = list(service.run_document(load_text(CHAT), {"q": "Hi"}))
    assert any(isinstance(e, Chunk) for e in events)
    assert _count(services, Run) == 0


def test_deadlines_fire_in_order_and_cancelled_ones_never():
    watcher = DeadlineWatcher()
    fired: list[str] = []
    last = threading.Event()
    watcher.watch(0.2, lambda: fired.append("late"))
    dropped = watcher.watch(0.05, lambda: fired.append("dropped"))
    watcher.watch(0.1, lambda: fired.append("early"))
    watcher.watch(0.3, lambda: (fired.append("last"), last.set()))
    dropped.cancel()
    assert last.wait(60)  # a guard against hanging, not a speed check
    assert fired == ["early", "late", "last"]
