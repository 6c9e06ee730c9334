"""Apps and their versions, runs, sessions and run analytics.

Each operation is written once (a generator, see ``calls``); ``AppMethods`` is its
face on ``Client`` and ``AsyncAppMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from appforge.client.calls import (
    YAML_ACCEPT,
    YAML_TYPE,
    AppSource,
    AsyncDriven,
    Call,
    Op,
    SyncDriven,
    definition,
    given,
    many,
    one,
    time_range,
    window,
)
from appforge.client.models import (
    AppAnalytics,
    AppCheck,
    AppInfo,
    AppVersion,
    AppVersionDetail,
    RunList,
    RunRecord,
    RunResult,
    RunRow,
    SessionInfo,
    SessionSummary,
)

# --- operations -------------------------------------------------------------------------


def _create_app(app: AppSource) -> Op[AppInfo]:
    r = yield Call("POST", "/api/apps", content=definition(app), headers=YAML_TYPE)
    return one(AppInfo, r)


def _validate_app(app: AppSource) -> Op[AppCheck]:
    r = yield Call("POST", "/api/apps/validate", content=definition(app), headers=YAML_TYPE)
    return one(AppCheck, r)


def _update_app(uuid: str, app: AppSource) -> Op[AppInfo]:
    r = yield Call("PATCH", f"/api/apps/{uuid}", content=definition(app), headers=YAML_TYPE)
    return one(AppInfo, r)


def _get_app(uuid: str) -> Op[AppInfo]:
    r = yield Call("GET", f"/api/apps/{uuid}")
    return one(AppInfo, r)


def _get_app_yaml(uuid: str) -> Op[str]:
    r = yield Call("GET", f"/api/apps/{uuid}", headers=YAML_ACCEPT)
    return r.text


def _list_apps(q: str | None, limit: int, offset: int) -> Op[list[AppInfo]]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if q:
        params["q"] = q
    r = yield Call("GET", "/api/apps", params=params)
    return many(AppInfo, r)


def _delete_app(uuid: str) -> Op[None]:
    yield Call("DELETE", f"/api/apps/{uuid}")


def _app_versions(uuid: str) -> Op[list[AppVersion]]:
    r = yield Call("GET", f"/api/apps/{uuid}/versions")
    return many(AppVersion, r)


def _get_app_version_yaml(uuid: str, version: int) -> Op[str]:
    r = yield Call("GET", f"/api/apps/{uuid}/versions/{version}", headers=YAML_ACCEPT)
    return r.text


def _get_app_version(uuid: str, version: int) -> Op[AppVersionDetail]:
    r = yield Call("GET", f"/api/apps/{uuid}/versions/{version}")
    return one(AppVersionDetail, r)


def _restore_app_version(
    uuid: str, version: int, require: Mapping[str, Any] | None = None
) -> Op[AppInfo]:
    body = None if require is None else {"require": dict(require)}
    r = yield Call("POST", f"/api/apps/{uuid}/versions/{version}/restore", json=body)
    return one(AppInfo, r)


def run_call(
    uuid: str, input: dict[str, Any] | None, session_id: str | None, *, stream: bool
) -> Call:
    """The request of a run (``stream``: NDJSON lines; the client may ask for SSE)."""
    path = f"/api/apps/{uuid}/run" + (f"/{session_id}" if session_id else "")
    return Call("POST", path, json={"input": input or {}, "stream": stream})


def _run(uuid: str, input: dict[str, Any] | None, session_id: str | None) -> Op[RunResult]:
    r = yield run_call(uuid, input, session_id, stream=False)
    return one(RunResult, r)


def _get_run(run_id: str) -> Op[RunRecord]:
    r = yield Call("GET", f"/api/runs/{run_id}")
    return one(RunRecord, r)


def _list_runs(
    uuid: str, status: str | None, limit: int, session_id: str | None, offset: int
) -> Op[list[RunRecord]]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status:
        params["status"] = status
    if session_id:
        params["session_id"] = session_id
    r = yield Call("GET", f"/api/apps/{uuid}/runs", params=params)
    return many(RunRecord, r)


def _list_all_runs(
    app: str | None,
    status: str | None,
    start: datetime | None,
    end: datetime | None,
    session_id: str | None,
    limit: int,
    offset: int,
) -> Op[RunList]:
    params = given(app=app, status=status, session_id=session_id, limit=limit, offset=offset)
    r = yield Call("GET", "/api/runs", params={**params, **time_range(start, end)})
    runs = many(RunRow, r)
    return RunList(runs=runs, total=int(r.headers.get("x-total-count", len(runs))))


def _analytics(
    uuid: str, start: datetime | None, end: datetime | None, bucket: str
) -> Op[AppAnalytics]:
    r = yield Call("GET", f"/api/apps/{uuid}/analytics", params=window(start, end, bucket))
    return one(AppAnalytics, r)


def _get_session(session_id: str) -> Op[SessionInfo]:
    r = yield Call("GET", f"/api/sessions/{session_id}")
    return one(SessionInfo, r)


def _list_sessions(uuid: str, limit: int, offset: int) -> Op[list[SessionSummary]]:
    params = {"limit": limit, "offset": offset}
    r = yield Call("GET", f"/api/apps/{uuid}/sessions", params=params)
    return many(SessionSummary, r)


def _delete_session(session_id: str) -> Op[None]:
    yield Call("DELETE", f"/api/sessions/{session_id}")


# --- Client -----------------------------------------------------------------------------


class AppMethods(SyncDriven):
    """Apps, runs and sessions on ``Client``."""

    def create_app(self, app: AppSource) -> AppInfo:
        """Create an app from a YAML file (a ``Path``), YAML text, or a mapping."""
        return self._drive(_create_app(app))

    def validate_app(self, app: AppSource) -> AppCheck:
        """Check a definition as a save would, storing nothing (raises on problems)."""
        return self._drive(_validate_app(app))

    def update_app(self, uuid: str, app: AppSource) -> AppInfo:
        """Save a new definition of an app (a new version if anything changed)."""
        return self._drive(_update_app(uuid, app))

    def get_app(self, uuid: str) -> AppInfo:
        """An app with its current definition."""
        return self._drive(_get_app(uuid))

    def get_app_yaml(self, uuid: str) -> str:
        """An app's current definition as the YAML it was saved as."""
        return self._drive(_get_app_yaml(uuid))

    def list_apps(self, q: str | None = None, limit: int = 100, offset: int = 0) -> list[AppInfo]:
        """The apps, newest first; ``q`` searches names and descriptions."""
        return self._drive(_list_apps(q, limit, offset))

    def delete_app(self, uuid: str) -> None:
        """Delete an app with its versions, sessions and runs."""
        return self._drive(_delete_app(uuid))

    def app_versions(self, uuid: str) -> list[AppVersion]:
        """The versions of an app, newest first."""
        return self._drive(_app_versions(uuid))

    def get_app_version_yaml(self, uuid: str, version: int) -> str:
        """One earlier definition of the app, as the YAML it was stored with."""
        return self._drive(_get_app_version_yaml(uuid, version))

    def get_app_version(self, uuid: str, version: int) -> AppVersionDetail:
        """One earlier definition of the app, as JSON (with its YAML text)."""
        return self._drive(_get_app_version(uuid, version))

    def restore_app_version(
        self, uuid: str, version: int, *, require: Mapping[str, Any] | None = None
    ) -> AppInfo:
        """Save an earlier definition again, as the newest version; with ``require``
        (else the app's stored policy) only if an evaluation of that version passes
        (``ConflictError`` ``EVALUATION_FAILED`` otherwise)."""
        return self._drive(_restore_app_version(uuid, version, require))

    def run(
        self, uuid: str, input: dict[str, Any] | None = None, session_id: str | None = None
    ) -> RunResult:
        """Run an app and wait for its whole output (``stream`` gives it in pieces)."""
        return self._drive(_run(uuid, input, session_id))

    def get_run(self, run_id: str) -> RunRecord:
        """A stored run with its input, output, steps, usage and error."""
        return self._drive(_get_run(run_id))

    def list_runs(
        self,
        uuid: str,
        status: str | None = None,
        limit: int = 50,
        *,
        session_id: str | None = None,
        offset: int = 0,
    ) -> list[RunRecord]:
        """An app's runs, newest first; filtered by status or session."""
        return self._drive(_list_runs(uuid, status, limit, session_id, offset))

    def list_all_runs(
        self,
        *,
        app: str | None = None,
        status: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        session_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> RunList:
        """Runs of every app the token may read, newest first, as summaries, with the
        number that match; ``app`` is a uuid or a name, ``start``/``end`` a time range
        (``end`` excluded)."""
        return self._drive(_list_all_runs(app, status, start, end, session_id, limit, offset))

    def analytics(
        self,
        uuid: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str = "day",
    ) -> AppAnalytics:
        """Run figures of an app between ``start`` and ``end`` (default: the last 7 days)."""
        return self._drive(_analytics(uuid, start, end, bucket))

    def get_session(self, session_id: str) -> SessionInfo:
        """A session with its finished turns, oldest first."""
        return self._drive(_get_session(session_id))

    def list_sessions(self, uuid: str, limit: int = 50, offset: int = 0) -> list[SessionSummary]:
        """An app's sessions, newest first, with their first message (a runner: its own)."""
        return self._drive(_list_sessions(uuid, limit, offset))

    def delete_session(self, session_id: str) -> None:
        """Forget a session and its turns."""
        return self._drive(_delete_session(session_id))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncAppMethods(AsyncDriven):
    """Apps, runs and sessions on ``AsyncClient``."""

    async def create_app(self, app: AppSource) -> AppInfo:
        """Create an app from a YAML file (a ``Path``), YAML text, or a mapping."""
        return await self._drive(_create_app(app))

    async def validate_app(self, app: AppSource) -> AppCheck:
        """Check a definition as a save would, storing nothing (raises on problems)."""
        return await self._drive(_validate_app(app))

    async def update_app(self, uuid: str, app: AppSource) -> AppInfo:
        """Save a new definition of an app (a new version if anything changed)."""
        return await self._drive(_update_app(uuid, app))

    async def get_app(self, uuid: str) -> AppInfo:
        """An app with its current definition."""
        return await self._drive(_get_app(uuid))

    async def get_app_yaml(self, uuid: str) -> str:
        """An app's current definition as the YAML it was saved as."""
        return await self._drive(_get_app_yaml(uuid))

    async def list_apps(
        self, q: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[AppInfo]:
        """The apps, newest first; ``q`` searches names and descriptions."""
        return await self._drive(_list_apps(q, limit, offset))

    async def delete_app(self, uuid: str) -> None:
        """Delete an app with its versions, sessions and runs."""
        return await self._drive(_delete_app(uuid))

    async def app_versions(self, uuid: str) -> list[AppVersion]:
        """The versions of an app, newest first."""
        return await self._drive(_app_versions(uuid))

    async def get_app_version_yaml(self, uuid: str, version: int) -> str:
        """One earlier definition of the app, as the YAML it was stored with."""
        return await self._drive(_get_app_version_yaml(uuid, version))

    async def get_app_version(self, uuid: str, version: int) -> AppVersionDetail:
        """One earlier definition of the app, as JSON (with its YAML text)."""
        return await self._drive(_get_app_version(uuid, version))

    async def restore_app_version(
        self, uuid: str, version: int, *, require: Mapping[str, Any] | None = None
    ) -> AppInfo:
        """Save an earlier definition again, as the newest version; with ``require``
        (else the app's stored policy) only if an evaluation of that version passes
        (``ConflictError`` ``EVALUATION_FAILED`` otherwise)."""
        return await self._drive(_restore_app_version(uuid, version, require))

    async def run(
        self, uuid: str, input: dict[str, Any] | None = None, session_id: str | None = None
    ) -> RunResult:
        """Run an app and wait for its whole output (``stream`` gives it in pieces)."""
        return await self._drive(_run(uuid, input, session_id))

    async def get_run(self, run_id: str) -> RunRecord:
        """A stored run with its input, output, steps, usage and error."""
        return await self._drive(_get_run(run_id))

    async def list_runs(
        self,
        uuid: str,
        status: str | None = None,
        limit: int = 50,
        *,
        session_id: str | None = None,
        offset: int = 0,
    ) -> list[RunRecord]:
        """An app's runs, newest first; filtered by status or session."""
        return await self._drive(_list_runs(uuid, status, limit, session_id, offset))

    async def list_all_runs(
        self,
        *,
        app: str | None = None,
        status: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        session_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> RunList:
        """Runs of every app the token may read, newest first, as summaries, with the
        number that match; ``app`` is a uuid or a name, ``start``/``end`` a time range
        (``end`` excluded)."""
        return await self._drive(_list_all_runs(app, status, start, end, session_id, limit, offset))

    async def analytics(
        self,
        uuid: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str = "day",
    ) -> AppAnalytics:
        """Run figures of an app between ``start`` and ``end`` (default: the last 7 days)."""
        return await self._drive(_analytics(uuid, start, end, bucket))

    async def get_session(self, session_id: str) -> SessionInfo:
        """A session with its finished turns, oldest first."""
        return await self._drive(_get_session(session_id))

    async def list_sessions(
        self, uuid: str, limit: int = 50, offset: int = 0
    ) -> list[SessionSummary]:
        """An app's sessions, newest first, with their first message (a runner: its own)."""
        return await self._drive(_list_sessions(uuid, limit, offset))

    async def delete_session(self, session_id: str) -> None:
        """Forget a session and its turns."""
        return await self._drive(_delete_session(session_id))
