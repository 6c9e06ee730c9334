"""The Python client against a real `appforge serve` process, sync and async.

One server process serves the module (real SQLite, Chroma, MiniLM and SmolLM2,
nothing downloaded). Each test is written once, as a coroutine over a client,
and runs twice: on ``AsyncClient`` and on ``Client`` (whose calls the ``Sync``
view below simply makes, so both go through their own HTTP stack). A small
real HTTP server on 127.0.0.1 serves the page of a URL entry and receives
webhook deliveries; the server allows loopback URLs for this.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ServerProcess

from appforge.client import (
    ApiError,
    AppAnalytics,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    StreamChunk,
    StreamError,
    stitch,
)

TOKEN = "af_live_admin_token_0123456789abcdef"
EXAMPLE = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples" / "summarize.yaml"
PAGE = b"""<html><head><title>Otters</title></head><body>
<h1>Otters</h1><p>Sea otters hold hands while they sleep so they do not drift apart.</p>
</body></html>"""
# Small and deterministic: short answers, a fixed seed.
PARAMS = {"temperature": 0, "seed": 1, "max_tokens": 8}


def chat_app(name: str) -> dict[str, Any]:
    return {
        "version": 1,
        "name": name,
        "type": "chat",
        "input": {
            "q": {"type": "string", "required": True},
            "d": {"type": "integer", "default": 1},
        },
        "steps": [
            {
                "id": "a",
                "kind": "llm",
                "prompt": {"user": "{{ input.q }}"},
                "history": 2,
                "params": PARAMS,
            }
        ],
        "output": {"a": "{{ a.text }}", "n": "{{ 10 // input.d }}"},
    }


# --- a real local HTTP server: pages for URL entries, a receiver for webhooks ---------


class Edge:
    """What the local server serves (GET) and what it was sent (POST)."""

    def __init__(self) -> None:
        self.base = ""
        self.pages: dict[str, bytes] = {}
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    state = Edge()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.received.append((self.path, dict(self.headers), raw))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """A server that downloads nothing and reaches no outside host."""
    return {
        "APPFORGE_HOME": str(home),
        "APPFORGE_ADMIN_TOKEN": TOKEN,
        "APPFORGE_MODELS": json.dumps({"default": "local:smollm2"}),
        "APPFORGE_LOCAL__N_CTX": "1024",
        "APPFORGE_DATASOURCES__URL_ALLOWLIST": json.dumps(["127.0.0.1"]),
        "APPFORGE_DATASOURCES__POLL_SECONDS": "0.2",
        "APPFORGE_WEBHOOKS__POLL_SECONDS": "0.2",
        "OPENAI_API_KEY": "",  # the openai provider stays unconfigured: no network
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(server_env(tmp_path_factory.mktemp("live_home")))
    yield process
    process.stop()


# --- one scenario, two clients ---------------------------------------------------------


class Sync:
    """``Client`` seen from a coroutine: each call is made as is (blocking)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[StreamChunk]:
        for chunk in self.client.stream(*args, **kwargs):
            yield chunk


Scenario = Callable[[Any], Awaitable[Any]]


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def drive(base: str, kind: str, scenario: Scenario, token: str = TOKEN, **options: Any) -> Any:
    """Run ``scenario`` with a ``Client`` (kind ``sync``) or an ``AsyncClient``."""

    async def main() -> Any:
        if kind == "sync":
            with Client(base, token, **options) as client:
                return await scenario(Sync(client))
        async with AsyncClient(base, token, **options) as aclient:
            return await scenario(aclient)

    return asyncio.run(main())


async def collect(chunks: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [c async for c in chunks]


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 300.0) -> Any:
    """Poll ``check`` until it returns something truthy (bounded only against hangs)."""
    end = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


# --- apps -------------------------------------------------------------------------------


def test_client_live_apps_lifecycle(server: ServerProcess, kind: str):
    async def scenario(af: Any) -> None:
        from_file = await af.create_app(EXAMPLE)
        assert from_file.name == "Summarize" and from_file.version == 1
        assert await af.get_app_yaml(from_file.uuid) == EXAMPLE.read_text()
        checked = await af.validate_app(chat_app(f"Checked {kind}"))
        expected = {"valid": True, "name": f"Checked {kind}", "type": "chat", "public": False}
        assert checked.model_dump() == expected
        with pytest.raises(InvalidRequestError) as invalid:
            await af.validate_app("name: [")
        assert invalid.value.code == "YAML_INVALID" and invalid.value.status == 422
        assert await af.list_apps(q=f"checked {kind}") == []  # validating stores nothing
        app = await af.create_app(chat_app(f"Apps {kind}"))
        assert (await af.get_app(app.uuid)).definition["steps"][0]["id"] == "a"
        listed = await af.list_apps(q=f"apps {kind}")
        assert [a.uuid for a in listed] == [app.uuid]
        assert app.uuid in {a.uuid for a in await af.list_apps(limit=500)}

        updated = await af.update_app(app.uuid, {**chat_app(f"Apps {kind}"), "description": "v2"})
        assert (updated.version, updated.description) == (2, "v2")
        versions = await af.app_versions(app.uuid)
        assert [(v.version, v.current) for v in versions] == [(2, True), (1, False)]
        first = await af.get_app_version(app.uuid, 1)
        assert first.version == 1 and not first.current and "description" not in first.definition
        assert first.yaml == await af.get_app_version_yaml(app.uuid, 1)
        restored = await af.restore_app_version(app.uuid, 1)
        assert (restored.version, restored.description) == (3, "")

        await af.delete_app(app.uuid)
        await af.delete_app(from_file.uuid)
        with pytest.raises(NotFoundError) as gone:
            await af.get_app(app.uuid)
        assert gone.value.code == "APP_NOT_FOUND" and gone.value.status == 404

    drive(server.base, kind, scenario)


def test_client_live_run_stream_sessions_and_runs(server: ServerProcess, kind: str):
    async def scenario(af: Any) -> None:
        app = await af.create_app(chat_app(f"Runs {kind}"))
        first = await af.run(app.uuid, {"q": "Hello"})
        assert first.run.status == "succeeded" and first.output["n"] == 10
        assert isinstance(first.output["a"], str) and first.output["a"]

        chunks = await collect(af.stream(app.uuid, {"q": "Hello"}))
        assert chunks[-1].done and chunks[-1].run is not None
        assert not any(c.done for c in chunks[:-1])
        assert stitch(chunks[:-1]) == first.output  # same seed: the same text, in pieces
        sse = await collect(af.stream(app.uuid, {"q": "Hello"}, sse=True))
        assert sse[-1].done and stitch(sse[:-1]) == first.output

        sid = first.session_id
        second = await af.run(app.uuid, {"q": "And then?"}, session_id=sid)
        assert second.session_id == sid
        third = await collect(af.stream(app.uuid, {"q": "More"}, session_id=sid))
        assert third[-1].session_id == sid and third[-1].run is not None
        session = await af.get_session(sid)
        assert session.app_uuid == app.uuid
        [listed] = [s for s in await af.list_sessions(app.uuid, limit=10) if s.id == sid]
        assert (listed.turns, listed.first_input) == (3, "Hello")
        assert [t.input["q"] for t in session.turns] == ["Hello", "And then?", "More"]
        assert [t.run_id for t in session.turns][-1] == third[-1].run.id

        in_session = await af.list_runs(app.uuid, session_id=sid)
        assert [r.id for r in in_session] == [t.run_id for t in reversed(session.turns)]
        everything = await af.list_runs(app.uuid, status="succeeded")
        assert len(everything) == 5  # two lone runs, three in the session
        assert [r.id for r in await af.list_runs(app.uuid, limit=2, offset=1)] == [
            r.id for r in everything[1:3]
        ]
        # Across apps: this app's runs by name, as summaries with their first words.
        listed = await af.list_all_runs(app=app.name, limit=2)
        assert listed.total == 5 and [r.id for r in listed.runs] == [r.id for r in everything[:2]]
        assert listed.runs[0].input_preview == "More" and listed.runs[0].app_name == app.name
        assert listed.runs[0].tokens_out == everything[0].usage["completion_tokens"]
        in_range = await af.list_all_runs(
            app=app.uuid, session_id=sid, start=everything[-1].created_at, end=datetime.now(UTC)
        )
        assert [r.id for r in in_range.runs] == [r.id for r in in_session]
        record = await af.get_run(third[-1].run.id)
        assert record.session_id == sid and record.output == stitch(third[:-1])
        assert len(record.steps[0]["messages"]) == 5  # two earlier turns came back as history

        stats = await af.analytics(
            app.uuid, start=datetime.now(UTC) - timedelta(hours=1), bucket="hour"
        )
        assert isinstance(stats, AppAnalytics)
        assert stats.totals.runs == 5 and stats.totals.errors == 0
        assert [v.app_version for v in stats.by_version] == [1]
        completion = sum(r.usage["completion_tokens"] for r in everything)
        assert stats.totals.tokens.completion == completion > 0
        assert sum(s.runs for s in stats.series) == 5

        await af.delete_session(sid)
        with pytest.raises(NotFoundError) as gone:
            await af.get_session(sid)
        assert gone.value.code == "SESSION_NOT_FOUND"
        await af.delete_app(app.uuid)

    drive(server.base, kind, scenario)


# --- datasets and evaluations -----------------------------------------------------------


def test_client_live_datasets_and_evaluations(server: ServerProcess, kind: str):
    async def scenario(af: Any) -> None:
        app = await af.create_app(chat_app(f"Evals {kind}"))
        run = await af.run(app.uuid, {"q": "Hi"})
        name = f"cases-{kind}"
        made = await af.create_dataset(name, "for the client")
        assert (made.revision, made.case_count) == (1, 0)
        added = await af.add_cases(name, [{"input": {"q": "Hello"}, "expected": {"n": 10}}])
        assert added.revision == 2 and len(added.ids) == 1
        jsonl = json.dumps({"input": {"q": "Bye", "d": 2}, "expected": {"n": 5}}) + "\n"
        assert (await af.import_cases(name, jsonl)).revision == 3
        from_run = await af.run_to_dataset(run.run.id, name, expected_from_output=True)
        assert from_run.revision == 4
        cases = await af.list_cases(name)
        assert [c.input["q"] for c in cases] == ["Hello", "Bye", "Hi"]
        assert cases[2].expected == run.output
        changed = await af.update_case(name, cases[2].id, expected={"n": 10})
        assert changed.expected == {"n": 10}
        await af.delete_case(name, cases[1].id)
        assert "Bye" not in await af.export_cases(name)
        assert (await af.export_cases(name, "csv")).startswith("id,input,expected,metadata")
        renamed = await af.update_dataset(name, description="renamed")
        assert renamed.description == "renamed" and renamed.revision == 6
        assert name in [d.name for d in await af.list_datasets()]
        assert (await af.get_dataset(made.id)).case_count == 2

        scorers = [{"type": "equals", "output": "n"}, {"type": "tokens", "threshold": 10_000}]
        first = await af.start_evaluation(name, app.uuid, scorers, concurrency=2)
        assert first.status == "queued" and first.dataset_revision == 6
        done = await af.wait_for_evaluation(first.id, timeout=600, poll=0.2)
        assert (done.status, done.cases_done, done.summary["pass_rate"]) == ("done", 2, 1)
        results = await af.evaluation_results(first.id)
        assert [r.passed for r in results] == [True, True] and results[0].run_id
        overrides = {"params": {"max_tokens": 4}}
        second = await af.start_evaluation(name, app.uuid, scorers, overrides=overrides)
        try:  # it may end before the cancel arrives: both are answers of the API
            cancelled = await af.cancel_evaluation(second.id)
            assert cancelled.status == "cancelled"
        except ConflictError as exc:
            assert exc.code == "EVALUATION_FINISHED"
        ended = await af.wait_for_evaluation(second.id, timeout=600, poll=0.2)
        assert ended.status in ("cancelled", "done")
        compared = await af.compare_evaluations(first.id, second.id)
        assert compared.a.id == first.id and compared.regressed == []
        listed = await af.list_evaluations(dataset=name)
        assert {e.id for e in listed} == {first.id, second.id}
        assert (await af.get_evaluation(first.id)).summary["scores"]["tokens"] == 1

        # Evaluation policies: stored on a prompt (naming the app) and on an app.
        need = {"dataset": name, "scorers": scorers, "min_pass_rate": 0.9}
        uc = await af.create_use_case(f"Policies {kind}")
        prompt = await af.create_prompt(uc.id, f"gated-{kind}")
        stored = await af.set_prompt_policy(prompt.id, {**need, "app": app.uuid})
        assert (stored.subject, stored.require["app"]) == ("prompt", app.uuid)
        assert (await af.get_prompt_policy(prompt.id)).require == stored.require
        await af.delete_prompt_policy(prompt.id)
        with pytest.raises(NotFoundError) as none:
            await af.get_prompt_policy(prompt.id)
        assert none.value.code == "POLICY_NOT_FOUND"
        assert (await af.set_app_policy(app.uuid, need)).subject_id == app.uuid
        assert (await af.get_app_policy(app.uuid)).require["min_pass_rate"] == 0.9
        await af.delete_app_policy(app.uuid)
        with pytest.raises(NotFoundError):
            await af.get_app_policy(app.uuid)
        await af.delete_use_case(uc.id)
        await af.delete_dataset(name)
        with pytest.raises(NotFoundError) as gone:
            await af.get_dataset(name)
        assert gone.value.code == "DATASET_NOT_FOUND"
        await af.delete_app(app.uuid)

    drive(server.base, kind, scenario)


# --- datasources ------------------------------------------------------------------------


def test_client_live_datasources_entries_and_search(
    server: ServerProcess, edge: Edge, kind: str, tmp_path: Path
):
    edge.pages[f"/otters-{kind}.html"] = PAGE
    notes = tmp_path / "cats.md"
    notes.write_text("# Cats\n\nCats sleep about sixteen hours every day.\n")
    birds = tmp_path / "birds.txt"
    birds.write_text(f"Parrots ({kind}) can live for more than sixty years.\n")

    async def scenario(af: Any) -> None:
        ds = await af.create_datasource(f"kb-{kind}", "mixed", chunk_size=200, chunk_overlap=20)
        uid = ds.uuid
        assert (ds.chunk_size, ds.chunk_overlap) == (200, 20)
        assert uid in {d.uuid for d in await af.list_datasources()}
        text = await af.add_entry(
            uid, "dogs", content=f"Dogs ({kind}) bark at the mail carrier.", metadata={"t": "dogs"}
        )
        assert text.status == "pending" and text.entry_metadata == {"t": "dogs"}
        from_file = await af.add_entry(
            uid, "cats", file=notes, media_type="text/markdown", metadata={"t": "cats"}
        )
        url = f"{edge.base}/otters-{kind}.html"
        from_url = await af.add_entry(
            uid, "otters", url=url, metadata={"t": "otters", "n": 3}, refresh="weekly"
        )
        assert from_url.refresh == "weekly"
        upload = await af.upload_entry(uid, birds, name="birds", metadata={"t": "birds"})
        assert (upload.type, upload.name, upload.entry_metadata) == (
            "file",
            "birds",
            {"t": "birds"},
        )

        entries = await af.wait_for_entries(uid, timeout=120, poll=0.2)
        assert {e.name: e.status for e in entries} == dict.fromkeys(
            ["dogs", "cats", "otters", "birds"], "ready"
        ), entries
        assert [e.type for e in entries] == ["text", "file", "url", "file"]
        assert (await af.get_datasource(uid)).entries == {"ready": 4}
        assert (await af.get_entry(uid, from_url.uuid)).url == url

        hits = (await af.search(uid, "Do otters hold hands?", top_k=1)).results
        assert hits[0].metadata["entry_uuid"] == from_url.uuid
        assert "hold hands" in hits[0].text and -1 <= hits[0].score <= 1
        only_cats = await af.search(uid, "Do otters hold hands?", top_k=4, where={"md_t": "cats"})
        assert {h.metadata["entry_uuid"] for h in only_cats.results} == {from_file.uuid}
        assert all(h.metadata["md_t"] == "cats" for h in only_cats.results)
        numeric = await af.search(uid, "animals", where={"md_n": {"$gte": 3}})
        assert {h.metadata["name"] for h in numeric.results} == {"otters"}

        again = await af.retry_entry(uid, text.uuid)
        assert again.status == "pending"
        await af.wait_for_entries(uid, timeout=120, poll=0.2)
        scheduled = await af.update_entry(uid, from_url.uuid, refresh="daily")
        assert scheduled.refresh == "daily" and scheduled.next_refresh_at is not None
        rechunked = await af.update_datasource(uid, chunk_size=300)
        assert (rechunked.chunk_size, rechunked.chunk_overlap, rechunked.requeued) == (300, 20, 4)
        await af.wait_for_entries(uid, timeout=120, poll=0.2)
        await af.delete_entry(uid, text.uuid)
        assert [e.name for e in await af.list_entries(uid)] == ["cats", "otters", "birds"]
        with pytest.raises(NotFoundError) as gone:
            await af.get_entry(uid, text.uuid)
        assert gone.value.code == "ENTRY_NOT_FOUND"
        await af.delete_datasource(uid)
        assert uid not in {d.uuid for d in await af.list_datasources()}

    drive(server.base, kind, scenario)


# --- prompts ----------------------------------------------------------------------------


def test_client_live_prompts_versions_labels_deploy_render(server: ServerProcess, kind: str):
    async def scenario(af: Any) -> None:
        uc = await af.create_use_case(f"Support {kind}", "first")
        assert uc.id in {u.id for u in await af.list_use_cases()}
        renamed = await af.update_use_case(uc.id, description="help desk")
        assert (renamed.name, renamed.description) == (f"Support {kind}", "help desk")

        greet = await af.create_prompt(uc.id, f"greet-{kind}", tags=["greeting", kind])
        other = await af.create_prompt(uc.id, f"other-{kind}", tags=[kind])
        assert (await af.get_use_case(uc.id)).prompt_count == 2
        tagged = await af.list_prompts(uc.id, tags=["greeting"])
        assert [p.id for p in tagged] == [greet.id]
        pid = greet.id
        updated = await af.update_prompt(pid, description="says hello", tags=["greeting", kind])
        assert updated.description == "says hello" and updated.version_count == 0

        await af.create_version(pid, type="text", template_text="Hi {{ name }}!")
        await af.create_version(
            pid, type="text", template_text="Hello {{ name }}!", commit_message="warmer"
        )
        assert [v.version_number for v in await af.list_versions(pid)] == [2, 1]
        v2 = await af.get_version(pid, 2)
        assert (v2.template_text, v2.variables, v2.labels) == ("Hello {{ name }}!", ["name"], [])

        promoted = await af.promote(pid, 1, "production")
        assert promoted.labels == ["production"]
        assert (await af.promote(pid, 2, "beta")).labels == ["beta"]
        assert (await af.demote(pid, 2, "beta")).labels == []
        detail = await af.get_prompt(pid)
        assert {v.version_number: v.labels for v in detail.versions} == {
            2: [],
            1: ["production"],
        }

        production = {"name": "Ada"}
        assert (await af.render(pid, production, label="production")).text == "Hi Ada!"
        deployed = await af.deploy(pid, "production", 2, "warmer greeting")
        assert (deployed.version, deployed.previousVersion) == (2, 1)
        # The client's own deploy makes its cached render stale at once.
        assert (await af.render(pid, production, label="production")).text == "Hello Ada!"
        back = await af.rollback(pid, "production", notes="too warm")
        assert (back.version, back.previousVersion, back.notes) == (1, 2, "too warm")
        assert (await af.render(pid, production, label="production")).text == "Hi Ada!"
        assert (await af.render(pid, {"name": "Bo"}, version=2)).text == "Hello Bo!"
        moves = await af.deployments(pid)
        assert [m.action for m in moves.history] == ["promote", "promote", "demote"] + [
            "deploy",
            "rollback",
        ]
        assert [(d.environment, d.version) for d in moves.deployments] == [("production", 1)]

        changes = await af.diff(pid, 1, 2)
        assert [(c.type, c.old_content, c.content) for c in changes.changes] == [
            ("modified", "Hi {{ name }}!", "Hello {{ name }}!")
        ]
        assert changes.type.old == changes.type.new == "text" and changes.variables.added == []

        found = await af.search_prompts("Hello {{ name }}", tags=[kind])
        assert [p.id for p in found.prompts] == [pid] and found.pagination.total == 1
        mine = await af.search_prompts(tags=[kind], type="text", limit=1)
        assert mine.pagination.model_dump() == {"page": 1, "limit": 1, "total": 1, "pages": 1}

        # an app pinning the prompt: dependents, and analytics of the runs that used it
        app = await af.create_app(
            {
                "version": 1,
                "name": f"Greeter {kind}",
                "type": "text",
                "input": {"who": {"type": "string", "required": True}},
                "steps": [
                    {
                        "id": "g",
                        "kind": "llm",
                        "prompt": {
                            "ref": f"greet-{kind}",
                            "label": "production",
                            "variables": {"name": "{{ input.who }}"},
                        },
                        "params": PARAMS,
                    }
                ],
                "output": {"g": "{{ g.text }}"},
            }
        )
        deps = await af.dependents(pid)
        assert [(d.app_uuid, d.step, d.label) for d in deps] == [(app.uuid, "g", "production")]
        ran = await af.run(app.uuid, {"who": "Ada"})
        record = await af.get_run(ran.run.id)
        assert "Hi Ada!" in json.dumps(record.steps)
        usage = await af.prompt_analytics(pid, end=datetime.now(UTC) + timedelta(minutes=1))
        assert usage.prompt_id == pid and usage.totals.runs == 1
        assert [s.prompt_version for s in usage.by_version] == [1]
        assert [s.label for s in usage.by_label] == ["production"]
        await af.delete_app(app.uuid)

        await af.create_version(other.id, type="text", template_text="Bye")
        bulk = await af.bulk_prompts(
            "deploy", [(pid, 2), (other.id, 1)], environment="staging", atomic=True
        )
        assert (bulk.applied, bulk.succeeded, bulk.failed) == (True, 2, 0)
        assert (await af.get_version(other.id, 1)).labels == ["staging"]
        refused = await af.bulk_prompts(
            "deploy", [(pid, 1), ("no-such-prompt", 1)], environment="staging", atomic=True
        )
        assert (refused.applied, refused.succeeded, refused.failed) == (False, 0, 1)
        assert [r.ok for r in refused.results] == [True, False]
        assert (refused.results[1].error or {})["code"] == "PROMPT_NOT_FOUND"
        assert (await af.get_version(pid, 2)).labels == ["staging"]  # nothing applied
        dropped = await af.bulk_prompts("delete", [other.id])
        assert [r.model_dump() for r in dropped.results] == [
            {"id": other.id, "ok": True, "error": None}
        ]

        await af.delete_prompt(pid)
        with pytest.raises(NotFoundError) as gone:
            await af.get_prompt(pid)
        assert gone.value.code == "PROMPT_NOT_FOUND"
        await af.delete_use_case(uc.id)
        with pytest.raises(NotFoundError):
            await af.get_use_case(uc.id)

    drive(server.base, kind, scenario)


# --- tokens, models, health, signing ----------------------------------------------------


def test_client_live_tokens_models_and_signing(server: ServerProcess, kind: str):
    async def scenario(af: Any) -> dict[str, Any]:
        health = await af.health()
        assert health.status == "ok" and health.database
        ready = await af.ready()
        assert ready.status == "ready" and ready.checks["database"].ok
        me = await af.me()
        assert me.is_admin and me.name == "admin"
        models = await af.list_models(timeout=1)
        default = {a.name: a for a in models.aliases}["default"]
        assert (default.target, default.reachable) == ("local:smollm2", True)
        assert {p.name: p.kind for p in models.providers}["local"] == "local"
        plain = await af.create_token(f"reader-{kind}")
        signed = await af.create_token(f"signer-{kind}", signed=True)
        assert plain.token.startswith(plain.prefix) and plain.signing_secret is None
        assert signed.require_signature and signed.signing_secret
        listed = {t.id: t for t in await af.list_tokens()}
        assert not listed[plain.id].is_admin
        assert listed[signed.id].require_signature is True
        # A builder sign-in: a one-time claim for the browser, ended by its id.
        started = await af.create_builder_session()
        assert started.claim.startswith("afc_") and started.cookie.startswith("appforge_builder_")
        await af.end_builder_session(started.id)
        with pytest.raises(NotFoundError) as info:
            await af.end_builder_session()  # "current": this client uses a token
        assert info.value.code == "BUILDER_SESSION_NOT_FOUND"
        return {"plain": plain, "signed": signed}

    made = drive(server.base, kind, scenario)
    plain, signed = made["plain"], made["signed"]

    async def as_signer(af: Any) -> None:
        assert (await af.me()).id == signed.id
        assert (await af.create_use_case(f"Signed {kind}")).name == f"Signed {kind}"

    drive(server.base, kind, as_signer, signed.token, signing_secret=signed.signing_secret)

    async def unsigned(af: Any) -> None:
        with pytest.raises(AuthenticationError) as info:
            await af.me()
        assert info.value.code == "SIGNATURE_REQUIRED"

    drive(server.base, kind, unsigned, signed.token)

    async def not_admin(af: Any) -> None:
        assert (await af.me()).name == f"reader-{kind}"
        with pytest.raises(PermissionDeniedError) as info:
            await af.list_tokens()
        assert info.value.status == 403 and info.value.code

    drive(server.base, kind, not_admin, plain.token)

    async def revoke(af: Any) -> None:
        await af.revoke_token(plain.id)
        await af.revoke_token(signed.id)
        with pytest.raises(NotFoundError) as info:
            await af.revoke_token("no-such-token")
        assert info.value.code == "TOKEN_NOT_FOUND"
        log = await af.audit(target=plain.id)
        assert [e.action for e in log.events] == ["token.revoked", "token.created"]
        assert log.total == 2 and log.events[0].actor == "admin"
        assert (await af.audit(action="token.", actor="admin", limit=1)).total >= 4

    drive(server.base, kind, revoke)

    async def revoked(af: Any) -> None:
        with pytest.raises(AuthenticationError):
            await af.me()

    drive(server.base, kind, revoked, plain.token)


# --- model providers and aliases --------------------------------------------------------


def test_client_live_providers_and_aliases(server: ServerProcess, llama_server: str, kind: str):
    name, alias = f"llama-{kind}", f"remote-{kind}"

    async def scenario(af: Any) -> None:
        made = await af.create_provider(
            name, llama_server, api_key="sk-live-0123456789", headers={"X-Live": "1"}
        )
        assert (made.source, made.active, made.has_key, made.headers) == (
            "database",
            True,
            True,
            ["X-Live"],
        )
        listed = {(p.name, p.source) for p in await af.list_providers()}
        assert {(name, "database"), ("local", "builtin"), ("openai", "builtin")} <= listed
        assert (await af.test_provider(name, timeout=10)).models == ["smollm2"]
        changed = await af.update_provider(name, api_key="", models=["smollm2"], headers={})
        assert (changed.has_key, changed.headers) == (False, [])
        assert (await af.get_provider(name)).models == ["smollm2"]
        pointed = await af.set_model_alias(alias, f"{name}:smollm2")
        assert (pointed.target, pointed.source, pointed.active) == (
            f"{name}:smollm2",
            "database",
            True,
        )
        aliases = {a.name: a for a in await af.list_model_aliases()}
        assert aliases["default"].source == "env" and aliases[alias].target == pointed.target
        doc = chat_app(f"Remote {kind}")
        doc["steps"][0]["model"] = alias
        app = await af.create_app(doc)
        ran = await af.run(app.uuid, {"q": "Hello"})
        record = await af.get_run(ran.run.id)
        assert record.steps[0]["usage_reported"] is False  # llama_cpp.server's answer
        with pytest.raises(ConflictError) as info:
            await af.delete_provider(name)
        assert info.value.code == "PROVIDER_IN_USE"
        await af.delete_model_alias(alias)
        await af.delete_provider(name)
        await af.delete_app(app.uuid)
        with pytest.raises(NotFoundError) as info:
            await af.get_provider(name)
        assert info.value.code == "PROVIDER_NOT_FOUND"
        await af.create_provider(f"down-{kind}", "http://127.0.0.1:9/v1")
        with pytest.raises(ApiError) as failed:
            await af.test_provider(f"down-{kind}", timeout=2)
        assert (failed.value.status, failed.value.code) == (502, "PROVIDER_TEST_FAILED")
        assert failed.value.details["cause"] == "PROVIDER_UNAVAILABLE"

    drive(server.base, kind, scenario)


# --- webhooks ---------------------------------------------------------------------------


def test_client_live_webhooks_and_deliveries(server: ServerProcess, edge: Edge, kind: str):
    hook_path = f"/hook-{kind}"

    async def scenario(af: Any) -> None:
        hook = await af.create_webhook(
            edge.base + hook_path, ["prompt.created", "prompt.deleted"], "s3cret-value"
        )
        assert hook.active and hook.events == ["prompt.created", "prompt.deleted"]
        assert hook.id in {h.id for h in await af.list_webhooks()}
        assert (await af.get_webhook(hook.id)).url == edge.base + hook_path
        assert "secret" not in (await af.get_webhook(hook.id)).model_dump()

        uc = await af.create_use_case(f"Hooked {kind}")
        prompt = await af.create_prompt(uc.id, "hooked")

        async def delivered() -> list[Any]:
            done = await af.webhook_deliveries(hook.id)
            return done if done and all(d.status == "delivered" for d in done) else []

        deliveries = await until(delivered)
        assert [d.event for d in deliveries] == ["prompt.created"]
        assert deliveries[0].payload["data"]["promptId"] == prompt.id
        assert deliveries[0].attempts == 1 and deliveries[0].last_status_code == 200
        assert [a.status_code for a in deliveries[0].log] == [200]
        sent = [json.loads(body) for path, _, body in edge.received if path == hook_path]
        assert [s["data"]["promptId"] for s in sent] == [prompt.id]

        # Paused: nothing is queued; resumed (and re-subscribed): new events arrive.
        paused = await af.update_webhook(hook.id, active=False)
        assert not paused.active and paused.url == hook.url
        await af.create_prompt(uc.id, "unheard")
        assert len(await af.webhook_deliveries(hook.id)) == 1
        with pytest.raises(InvalidRequestError) as refused:
            await af.update_webhook(hook.id, url="http://169.254.169.254/", active=True)
        assert refused.value.code == "URL_REFUSED"
        assert not (await af.get_webhook(hook.id)).active
        resumed = await af.update_webhook(
            hook.id, active=True, events=["prompt.created", "use_case.deleted"]
        )
        assert resumed.active and resumed.events == ["prompt.created", "use_case.deleted"]
        heard = await af.create_prompt(uc.id, "heard")

        async def two_delivered() -> list[Any]:
            done = await af.webhook_deliveries(hook.id)
            return done if len(done) == 2 and all(d.status == "delivered" for d in done) else []

        latest = (await until(two_delivered))[0]
        assert latest.payload["data"]["promptId"] == heard.id

        await af.delete_webhook(hook.id)
        with pytest.raises(NotFoundError) as gone:
            await af.webhook_deliveries(hook.id)
        assert gone.value.code == "WEBHOOK_NOT_FOUND"
        await af.delete_use_case(uc.id)

    drive(server.base, kind, scenario)


# --- errors -----------------------------------------------------------------------------


def test_client_live_errors_are_typed(server: ServerProcess, kind: str):
    async def scenario(af: Any) -> None:
        with pytest.raises(NotFoundError) as missing:
            await af.run("no-such-app", {"q": "x"})
        assert (missing.value.status, missing.value.code) == (404, "APP_NOT_FOUND")
        assert missing.value.message and missing.value.request_id

        ds = await af.create_datasource(f"twice-{kind}", "text")
        with pytest.raises(ConflictError) as taken:
            await af.create_datasource(f"twice-{kind}", "text")
        assert (taken.value.status, taken.value.code) == (409, "DATASOURCE_EXISTS")
        assert f"twice-{kind}" in taken.value.message
        await af.delete_datasource(ds.uuid)

        with pytest.raises(InvalidRequestError) as bad_yaml:
            await af.create_app("name: [")
        assert (bad_yaml.value.status, bad_yaml.value.code) == (422, "YAML_INVALID")
        assert bad_yaml.value.details["errors"][0]["line"] == 1
        with pytest.raises(InvalidRequestError) as bad_field:
            await af.create_datasource(f"bad-{kind}", "nonsense")
        assert (bad_field.value.status, bad_field.value.code) == (422, "VALIDATION_ERROR")

        app = await af.create_app(chat_app(f"Errors {kind}"))
        with pytest.raises(InvalidRequestError) as bad_input:  # refused before the stream
            await collect(af.stream(app.uuid, {}))
        assert bad_input.value.code == "INPUT_INVALID"
        with pytest.raises(StreamError) as broken:  # fails after the answer streamed
            await collect(af.stream(app.uuid, {"q": "x", "d": 0}))
        assert broken.value.code == "TEMPLATE_ERROR" and broken.value.details["run_id"]
        failed = await af.list_runs(app.uuid, status="failed")
        assert [r.id for r in failed] == [broken.value.details["run_id"]]
        await af.delete_app(app.uuid)

    drive(server.base, kind, scenario)

    async def stranger(af: Any) -> None:
        with pytest.raises(AuthenticationError) as info:
            await af.list_apps()
        assert (info.value.status, info.value.code) == (401, "TOKEN_INVALID")
        assert info.value.message

    drive(server.base, kind, stranger, "af_not_a_real_token")


# --- retries on 429 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second server that allows one request per second per token."""
    home = tmp_path_factory.mktemp("limited_home")
    process = ServerProcess(
        server_env(
            home,
            APPFORGE_RATE_LIMIT__REQUESTS="1",
            APPFORGE_RATE_LIMIT__WINDOW_SECONDS="1",
            APPFORGE_RATE_LIMIT__BURST="1",
        )
    )
    yield process
    process.stop()


def test_client_live_retries_after_429(limited: ServerProcess, kind: str):
    seen: list[tuple[int, str]] = []

    def record(response: httpx.Response) -> None:
        seen.append((response.status_code, response.headers.get("retry-after", "")))

    async def arecord(response: httpx.Response) -> None:
        record(response)

    async def scenario(af: Any) -> None:
        await asyncio.sleep(1.1)  # a full bucket, whatever ran before
        assert (await af.me()).is_admin  # takes the only request in the bucket
        started = time.monotonic()
        assert await af.list_apps() == []  # 429, wait Retry-After, then 200
        assert time.monotonic() - started >= 1.0
        with pytest.raises(NotFoundError) as info:  # a stream is retried too
            await collect(af.stream("no-such-app", {}))
        assert info.value.code == "APP_NOT_FOUND"

    http: httpx.Client | httpx.AsyncClient
    if kind == "sync":
        http = httpx.Client(event_hooks={"response": [record]})
    else:
        http = httpx.AsyncClient(event_hooks={"response": [arecord]})
    drive(limited.base, kind, scenario, http=http, max_retries=3)
    assert seen == [(200, ""), (429, "1"), (200, ""), (429, "1"), (404, "")]

    async def impatient(af: Any) -> None:
        await asyncio.sleep(1.1)
        assert await af.list_apps() == []
        with pytest.raises(RateLimitedError) as info:
            await af.list_apps()
        assert (info.value.status, info.value.code) == (429, "RATE_LIMITED")
        assert info.value.details["retry_after"] == 1 and info.value.message

    drive(limited.base, kind, impatient, max_retries=0)


# --- coverage ---------------------------------------------------------------------------


def test_client_live_calls_every_operation():
    """Each operation of the client is called by a test above (on both clients)."""
    source = Path(__file__).read_text()
    called = set(re.findall(r"\baf\.(\w+)\(", source))
    operations = {
        name
        for name, fn in inspect.getmembers(Client, inspect.isfunction)
        if not name.startswith("_") and name != "close"
    }
    assert "stream" in operations and len(operations) == 108
    assert operations - called == set()
    assert issubclass(StreamError, ApiError)
