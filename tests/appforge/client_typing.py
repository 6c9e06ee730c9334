"""Signatures of the client as a caller's type checker sees them.

Never run: ``test_client_types.py`` has mypy (``--strict``, so unused ignores are
errors) check this file. Each ``assert_type`` pins a result type; each ``type:
ignore[...]`` pins a mistake mypy must refuse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, assert_type

from appforge.client import (
    AppCheck,
    AppInfo,
    AsyncClient,
    AuditEvent,
    AuditLog,
    BuilderSession,
    Client,
    DeployResult,
    EntryInfo,
    EvaluationInfo,
    ModelsInfo,
    NewToken,
    PromptDetail,
    PromptDiff,
    PromptVersionInfo,
    RenderedPrompt,
    RunList,
    RunRecord,
    RunResult,
    RunRow,
    Scorer,
    SearchResults,
    SessionSummary,
    StreamChunk,
    UseCaseInfo,
)


def sync_client(client: Client) -> None:
    assert_type(client.create_app(Path("app.yaml")), AppInfo)
    assert_type(client.create_app({"name": "x"}), AppInfo)
    assert_type(client.validate_app("name: x"), AppCheck)
    assert_type(client.get_app("uuid").definition, dict[str, Any])
    assert_type(client.list_apps(q="x"), list[AppInfo])
    assert_type(client.run("uuid", {"q": "hi"}), RunResult)
    assert_type(client.stream("uuid", {"q": "hi"}), Iterator[StreamChunk])
    assert_type(client.get_run("run"), RunRecord)
    assert_type(client.list_all_runs(app="Echo", start=datetime(2026, 1, 1)), RunList)
    assert_type(client.list_all_runs(status="failed").runs, list[RunRow])
    assert_type(client.list_sessions("uuid", limit=10), list[SessionSummary])
    assert_type(client.wait_for_entries("ds"), list[EntryInfo])
    assert_type(client.search("ds", "query", where={"md_a": 1}), SearchResults)
    assert_type(client.create_use_case("support"), UseCaseInfo)
    assert_type(client.get_prompt("p"), PromptDetail)
    assert_type(client.promote("p", 1, "production"), PromptVersionInfo)
    assert_type(client.deploy("p", "production", 2), DeployResult)
    assert_type(client.diff("p", 1, 2), PromptDiff)
    assert_type(client.render("p", {"name": "Ada"}, label="production"), RenderedPrompt)
    assert_type(client.list_models(timeout=1.0), ModelsInfo)
    assert_type(client.create_token("ci", signed=True), NewToken)
    assert_type(client.create_token("w", role="runner", apps=["a"], rate_limit="1/s"), NewToken)
    assert_type(client.create_token("w", expires_at=datetime(2030, 1, 1)).apps, list[str] | None)
    assert_type(client.audit(action="app.", start=datetime(2026, 1, 1)), AuditLog)
    assert_type(client.audit().events, list[AuditEvent])
    assert_type(client.audit().events[0].actor, str)
    assert_type(client.upload_entry("ds", Path("manual.pdf"), metadata={"k": 1}), EntryInfo)
    with Path("manual.pdf").open("rb") as opened:
        assert_type(client.upload_entry("ds", opened, filename="m.pdf"), EntryInfo)
    assert_type(client.create_builder_session(), BuilderSession)
    assert_type(client.end_builder_session(), None)
    scorers: list[Scorer] = [{"type": "equals"}, {"type": "similarity", "threshold": 0.8}]
    assert_type(client.start_evaluation("cases", "Echo", scorers), EvaluationInfo)

    client.create_ap("x")  # type: ignore[attr-defined]
    client.run("uuid", "not a mapping")  # type: ignore[arg-type]
    client.list_runs("uuid", sesion_id="s")  # type: ignore[call-arg]
    client.list_all_runs("Echo")  # type: ignore[call-arg]
    client.create_version("p", template_text="Hi")  # type: ignore[call-arg]
    print(client.get_run("run").output_text)  # type: ignore[attr-defined]
    client.create_token("w", role="owner")  # type: ignore[arg-type]
    client.create_token("w", "runner")  # type: ignore[call-arg]
    client.audit("app.created")  # type: ignore[call-arg]
    client.audit(start="2026-01-01")  # type: ignore[arg-type]
    client.upload_entry("ds", "manual.pdf")  # type: ignore[arg-type]
    client.start_evaluation("cases", "Echo", [{"type": "bleu"}])  # type: ignore[typeddict-item]
    client.start_evaluation("cases", "Echo", [{"threshold": 1}])  # type: ignore[typeddict-item]


async def async_client(aclient: AsyncClient) -> None:
    assert_type(await aclient.create_app(Path("app.yaml")), AppInfo)
    assert_type(await aclient.get_run("run"), RunRecord)
    assert_type(await aclient.list_all_runs(limit=10, offset=10), RunList)
    assert_type(await aclient.list_sessions("uuid", offset=5), list[SessionSummary])
    assert_type(await aclient.render("p", version=1), RenderedPrompt)
    assert_type(aclient.stream("uuid", {"q": "hi"}), AsyncIterator[StreamChunk])
    assert_type(await aclient.audit(actor="anonymous", limit=10), AuditLog)
    assert_type(await aclient.create_token("k", role="viewer"), NewToken)

    await aclient.create_ap("x")  # type: ignore[attr-defined]
    print(aclient.get_run("run").id)  # type: ignore[attr-defined]  # not awaited
