"""The Python client of the appforge API: ``Client`` (sync) and ``AsyncClient``.

Every operation is written once, as a generator that yields the HTTP call it
needs and receives the response; ``Client`` drives it with ``httpx.Client``
and ``AsyncClient`` with ``httpx.AsyncClient``. Errors come back as
:class:`ApiError` subclasses chosen by the error code of the body; 429 and 503
answers are retried, honouring ``Retry-After``. Given a signing secret, every
request is signed (see ``appforge/core/signing.py`` for the scheme).

    with Client("http://127.0.0.1:8000", token="...") as af:
        app = af.create_app(Path("apps_yaml/examples/summarize.yaml"))
        print(af.run(app.uuid, {"text": "..."}).output)
        for chunk in af.stream(app.uuid, {"text": "..."}):
            print(chunk.output)
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from pydantic import BaseModel, ConfigDict

from appforge.core import signing

T = TypeVar("T")

# --- results ------------------------------------------------------------------------


class _Result(BaseModel):
    # Newer servers may add fields: keep them instead of failing.
    model_config = ConfigDict(extra="allow")


class AppInfo(_Result):
    uuid: str
    name: str
    description: str = ""
    type: str
    public: bool
    version: int
    definition: dict[str, Any]


class AppVersion(_Result):
    version: int
    current: bool


class RunSummary(_Result):
    id: str
    status: str
    usage: dict[str, int] = {}
    latency_ms: float | None = None


class RunResult(_Result):
    session: dict[str, Any]
    output: dict[str, Any]
    run: RunSummary

    @property
    def session_id(self) -> str:
        return str(self.session["id"])


class StreamChunk(_Result):
    """One line of a streamed run: an output piece, or the final ``done`` line."""

    session: dict[str, Any]
    output: dict[str, Any] = {}
    run: RunSummary | None = None
    done: bool = False


class RunRecord(_Result):
    id: str
    app_uuid: str
    app_version: int
    session_id: str
    status: str
    input: dict[str, Any]
    output: dict[str, Any]
    steps: list[dict[str, Any]]
    usage: dict[str, Any]
    error: dict[str, Any] | None = None
    latency_ms: float | None = None


class SessionInfo(_Result):
    id: str
    app_uuid: str
    turns: list[dict[str, Any]]


class TokenInfo(_Result):
    id: str
    name: str
    prefix: str
    is_admin: bool


class AppVersionDetail(AppVersion):
    yaml: str
    definition: dict[str, Any]


class RunStats(_Result):
    """Figures over runs; a series item also has ``bucket``, a breakdown its key."""

    runs: int
    errors: int
    cancelled: int
    error_rate: float
    latency_ms: dict[str, float | None]
    ttft_ms: dict[str, float | None]
    tokens: dict[str, int]


class AppAnalytics(_Result):
    app_uuid: str
    start: datetime
    end: datetime
    bucket: str
    totals: RunStats
    series: list[RunStats]
    by_version: list[RunStats]


class PromptAnalytics(_Result):
    prompt_id: str
    start: datetime
    end: datetime
    bucket: str
    totals: RunStats
    series: list[RunStats]
    by_version: list[RunStats]
    by_label: list[RunStats]


class EntryInfo(_Result):
    uuid: str
    datasource_uuid: str
    name: str
    type: str
    status: str
    entry_metadata: dict[str, Any]
    error: str | None = None


class UseCaseInfo(_Result):
    id: str
    name: str
    description: str
    prompt_count: int


class PromptInfo(_Result):
    id: str
    use_case_id: str
    name: str
    description: str
    tags: list[str]
    version_count: int
    latest_version: int | None


class PromptVersionInfo(_Result):
    id: str
    prompt_id: str
    version_number: int
    type: str
    template_text: str | None
    template_messages: list[dict[str, Any]] | None
    model_defaults: dict[str, Any]
    variables: list[str]
    labels: list[str]


class DeployResult(_Result):
    """A move of an environment (deploy or rollback), with the API's field names."""

    promptId: str
    environment: str
    version: int
    previousVersion: int | None
    notes: str | None = None


class Dependent(_Result):
    app_uuid: str
    name: str
    step: str
    label: str | None
    version: int | None


class PromptSearchResult(_Result):
    prompts: list[PromptInfo]
    pagination: dict[str, int]


class BulkResult(_Result):
    operation: str
    atomic: bool
    applied: bool
    succeeded: int
    failed: int
    results: list[dict[str, Any]]


class WebhookInfo(_Result):
    id: str
    url: str
    events: list[str]
    active: bool


class WebhookDeliveryInfo(_Result):
    id: str
    webhook_id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    payload: dict[str, Any]
    log: list[dict[str, Any]] = []


# --- errors ---------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer of the server: ``status``, ``code``, ``message``, ``details``."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, request_id: str = ""
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.request_id = request_id


class AuthenticationError(ApiError):
    """401: no token, an unknown or revoked one, or a bad signature."""


class PermissionDeniedError(ApiError):
    """403."""


class NotFoundError(ApiError):
    """404: APP_NOT_FOUND, RUN_NOT_FOUND, ..."""


class ConflictError(ApiError):
    """409."""


class InvalidRequestError(ApiError):
    """400/413/415/422: YAML_INVALID, APP_INVALID, INPUT_INVALID, ..."""


class RateLimitedError(ApiError):
    """429 after the retries ran out."""


class ServerError(ApiError):
    """5xx: the run failed, the model backend failed, or a server bug."""


class StreamError(ApiError):
    """A streamed run failed after its first chunk (the error line of the stream)."""


def _error_class(status: int) -> type[ApiError]:
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDeniedError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitedError
    if status >= 500:
        return ServerError
    return InvalidRequestError


def error_from(status: int, body: Any, cls: type[ApiError] | None = None) -> ApiError:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    kind = cls or _error_class(status)
    return kind(
        status,
        str(err.get("code", "HTTP_ERROR")),
        str(err.get("message", f"HTTP {status}")),
        err.get("details"),
        str(body.get("request_id", "")) if isinstance(body, dict) else "",
    )


# --- calls ----------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        if self.content is not None:
            return self.content
        if self.json is not None:
            return json.dumps(self.json, separators=(",", ":")).encode()
        return b""


@dataclass
class Sleep:
    """An operation that polls asks its driver to wait (without blocking an event loop)."""

    seconds: float


Op = Generator[Call | Sleep, httpx.Response, T]

# Operations whose last good answer is kept: served again (stale) when the server
# is briefly unreachable, so an app reading its prompts keeps working.
CACHED_OPS = frozenset({"render", "get_prompt"})
# Writes after which no cached prompt answer is fresh any more: a client sees its
# own changes at once (the old answers stay as stale-if-error fallbacks).
PROMPT_WRITES = frozenset(
    {
        "update_prompt",
        "delete_prompt",
        "create_version",
        "promote",
        "demote",
        "deploy",
        "rollback",
        "bulk_prompts",
        "delete_use_case",
    }
)
# What a Sleep step receives back (operations ignore it).
_NO_RESPONSE = httpx.Response(204)

YAML_TYPE = {"Content-Type": "application/yaml"}


def _definition(app: str | Path | dict[str, Any]) -> bytes:
    """A YAML file path, YAML text, or a dict as the app definition."""
    if isinstance(app, Path):
        return app.read_bytes()
    if isinstance(app, dict):
        return yaml.safe_dump(app, sort_keys=False, allow_unicode=True).encode()
    return app.encode()


def stitch(chunks: Iterator[StreamChunk] | list[StreamChunk]) -> dict[str, Any]:
    """Join streamed chunks into the output a non-streamed run returns."""
    out: dict[str, Any] = {}
    for chunk in chunks:
        for key, piece in chunk.output.items():
            out[key] = out.get(key, "") + piece if isinstance(piece, str) else piece
    return out


class _Ops:
    """Each API operation, once: yield the call, receive the response, return the result."""

    # apps
    def create_app(self, app: str | Path | dict[str, Any]) -> Op[AppInfo]:
        r = yield Call("POST", "/api/apps", content=_definition(app), headers=YAML_TYPE)
        return AppInfo.model_validate(r.json())

    def validate_app(self, app: str | Path | dict[str, Any]) -> Op[dict[str, Any]]:
        """Check a definition as a save would, storing nothing (raises on problems)."""
        r = yield Call("POST", "/api/apps/validate", content=_definition(app), headers=YAML_TYPE)
        return dict(r.json())

    def update_app(self, uuid: str, app: str | Path | dict[str, Any]) -> Op[AppInfo]:
        r = yield Call("PATCH", f"/api/apps/{uuid}", content=_definition(app), headers=YAML_TYPE)
        return AppInfo.model_validate(r.json())

    def get_app(self, uuid: str) -> Op[AppInfo]:
        r = yield Call("GET", f"/api/apps/{uuid}")
        return AppInfo.model_validate(r.json())

    def get_app_yaml(self, uuid: str) -> Op[str]:
        r = yield Call("GET", f"/api/apps/{uuid}", headers={"Accept": "application/yaml"})
        return r.text

    def list_apps(
        self, q: str | None = None, limit: int = 100, offset: int = 0
    ) -> Op[list[AppInfo]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if q:
            params["q"] = q
        r = yield Call("GET", "/api/apps", params=params)
        return [AppInfo.model_validate(a) for a in r.json()]

    def delete_app(self, uuid: str) -> Op[None]:
        yield Call("DELETE", f"/api/apps/{uuid}")

    def app_versions(self, uuid: str) -> Op[list[AppVersion]]:
        r = yield Call("GET", f"/api/apps/{uuid}/versions")
        return [AppVersion.model_validate(v) for v in r.json()]

    def get_app_version_yaml(self, uuid: str, version: int) -> Op[str]:
        """One earlier definition of the app, as the YAML it was stored with."""
        path = f"/api/apps/{uuid}/versions/{version}"
        r = yield Call("GET", path, headers={"Accept": "application/yaml"})
        return r.text

    def get_app_version(self, uuid: str, version: int) -> Op[AppVersionDetail]:
        """One earlier definition of the app, as JSON (with its YAML text)."""
        r = yield Call("GET", f"/api/apps/{uuid}/versions/{version}")
        return AppVersionDetail.model_validate(r.json())

    def restore_app_version(self, uuid: str, version: int) -> Op[AppInfo]:
        r = yield Call("POST", f"/api/apps/{uuid}/versions/{version}/restore")
        return AppInfo.model_validate(r.json())

    # runs
    def run(
        self, uuid: str, input: dict[str, Any] | None = None, session_id: str | None = None
    ) -> Op[RunResult]:
        path = f"/api/apps/{uuid}/run" + (f"/{session_id}" if session_id else "")
        r = yield Call("POST", path, json={"input": input or {}, "stream": False})
        return RunResult.model_validate(r.json())

    def get_run(self, run_id: str) -> Op[RunRecord]:
        r = yield Call("GET", f"/api/runs/{run_id}")
        return RunRecord.model_validate(r.json())

    def list_runs(
        self,
        uuid: str,
        status: str | None = None,
        limit: int = 50,
        *,
        session_id: str | None = None,
        offset: int = 0,
    ) -> Op[list[RunRecord]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if session_id:
            params["session_id"] = session_id
        r = yield Call("GET", f"/api/apps/{uuid}/runs", params=params)
        return [RunRecord.model_validate(x) for x in r.json()]

    def analytics(
        self,
        uuid: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str = "day",
    ) -> Op[AppAnalytics]:
        """Run figures of an app between ``start`` and ``end`` (default: the last 7 days)."""
        params = _window(start, end, bucket)
        r = yield Call("GET", f"/api/apps/{uuid}/analytics", params=params)
        return AppAnalytics.model_validate(r.json())

    # sessions
    def get_session(self, session_id: str) -> Op[SessionInfo]:
        r = yield Call("GET", f"/api/sessions/{session_id}")
        return SessionInfo.model_validate(r.json())

    def delete_session(self, session_id: str) -> Op[None]:
        yield Call("DELETE", f"/api/sessions/{session_id}")

    # tokens
    def create_token(
        self, name: str, *, is_admin: bool = False, signed: bool = False
    ) -> Op[dict[str, Any]]:
        r = yield Call(
            "POST",
            "/api/tokens",
            json={"name": name, "is_admin": is_admin, "require_signature": signed},
        )
        body: dict[str, Any] = r.json()
        return body

    def list_tokens(self) -> Op[list[TokenInfo]]:
        r = yield Call("GET", "/api/tokens")
        return [TokenInfo.model_validate(t) for t in r.json()]

    def revoke_token(self, token_id: str) -> Op[None]:
        yield Call("DELETE", f"/api/tokens/{token_id}")

    def me(self) -> Op[TokenInfo]:
        """The token this client authenticates with."""
        r = yield Call("GET", "/api/tokens/me")
        return TokenInfo.model_validate(r.json())

    def health(self) -> Op[dict[str, Any]]:
        r = yield Call("GET", "/api/health")
        body: dict[str, Any] = r.json()
        return body

    def list_models(self, timeout: float | None = None) -> Op[dict[str, Any]]:
        """The model aliases and providers, each with whether it answers now."""
        params = {"timeout": timeout} if timeout is not None else None
        r = yield Call("GET", "/api/models", params=params)
        body: dict[str, Any] = r.json()
        return body

    # datasources
    def create_datasource(
        self, name: str, type: str = "mixed", **options: Any
    ) -> Op[dict[str, Any]]:
        r = yield Call("POST", "/api/datasources", json={"name": name, "type": type, **options})
        return _json(r)

    def list_datasources(self) -> Op[list[dict[str, Any]]]:
        r = yield Call("GET", "/api/datasources")
        return _json(r)

    def get_datasource(self, uuid: str) -> Op[dict[str, Any]]:
        r = yield Call("GET", f"/api/datasources/{uuid}")
        return _json(r)

    def delete_datasource(self, uuid: str) -> Op[None]:
        yield Call("DELETE", f"/api/datasources/{uuid}")

    def add_entry(
        self,
        datasource: str,
        name: str,
        *,
        content: str | None = None,
        url: str | None = None,
        file: Path | bytes | None = None,
        metadata: dict[str, Any] | None = None,
        media_type: str | None = None,
    ) -> Op[dict[str, Any]]:
        """Add a text, URL or file entry (files go base64 in the JSON body)."""
        data: dict[str, Any] = {"name": name}
        if content is not None:
            data["content"] = content
        if url is not None:
            data["url"] = url
        if file is not None:
            raw = file.read_bytes() if isinstance(file, Path) else file
            data["file"] = base64.b64encode(raw).decode()
        if media_type is not None:
            data["media_type"] = media_type
        body = {"entry_data": data, "entry_metadata": metadata or {}}
        r = yield Call("POST", f"/api/datasources/{datasource}/entries", json=body)
        return _json(r)

    def upload_entry(
        self,
        datasource: str,
        file: Path | bytes,
        *,
        name: str | None = None,
        filename: str | None = None,
        media_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Op[EntryInfo]:
        """Add a file entry as multipart/form-data (no base64 inflation on the wire)."""
        raw = file.read_bytes() if isinstance(file, Path) else file
        upload_name = filename or (file.name if isinstance(file, Path) else "upload")
        form: dict[str, str] = {}
        if name is not None:
            form["name"] = name
        if metadata:
            form["entry_metadata"] = json.dumps(metadata)
        kind = media_type or "application/octet-stream"
        # httpx encodes the form; the bytes go out as they are (and are signed as they are).
        encoded = httpx.Request(
            "POST", "http://form", files={"file": (upload_name, raw, kind)}, data=form
        )
        path = f"/api/datasources/{datasource}/entries/upload"
        headers = {"Content-Type": encoded.headers["Content-Type"]}
        r = yield Call("POST", path, content=encoded.read(), headers=headers)
        return EntryInfo.model_validate(r.json())

    def list_entries(self, datasource: str) -> Op[list[dict[str, Any]]]:
        r = yield Call("GET", f"/api/datasources/{datasource}/entries")
        return _json(r)

    def get_entry(self, datasource: str, entry: str) -> Op[dict[str, Any]]:
        r = yield Call("GET", f"/api/datasources/{datasource}/entries/{entry}")
        return _json(r)

    def retry_entry(self, datasource: str, entry: str) -> Op[dict[str, Any]]:
        r = yield Call("POST", f"/api/datasources/{datasource}/entries/{entry}/retry")
        return _json(r)

    def delete_entry(self, datasource: str, entry: str) -> Op[None]:
        yield Call("DELETE", f"/api/datasources/{datasource}/entries/{entry}")

    def wait_for_entries(
        self, datasource: str, timeout: float = 300.0, poll: float = 0.5
    ) -> Op[list[dict[str, Any]]]:
        """Poll until no entry of the datasource is pending or processing."""
        waited = 0.0
        while True:
            r = yield Call("GET", f"/api/datasources/{datasource}/entries")
            entries: list[dict[str, Any]] = _json(r)
            if all(e["status"] in ("ready", "failed") for e in entries):
                return entries
            if waited >= timeout:
                raise TimeoutError(f"entries of {datasource} not ready after {timeout:g} s")
            yield Sleep(poll)
            waited += poll

    def search(
        self, datasource: str, query: str, top_k: int = 4, where: dict[str, Any] | None = None
    ) -> Op[Any]:
        body: dict[str, Any] = {"query": query, "top_k": top_k}
        if where:
            body["where"] = where
        r = yield Call("POST", f"/api/datasources/{datasource}/search", json=body)
        return _json(r)

    # prompts
    def create_use_case(self, name: str, description: str = "") -> Op[dict[str, Any]]:
        body = {"name": name, "description": description}
        r = yield Call("POST", "/api/v1/use-cases", json=body)
        return _json(r)

    def list_use_cases(self, skip: int = 0, limit: int = 100) -> Op[list[dict[str, Any]]]:
        r = yield Call("GET", "/api/v1/use-cases", params={"skip": skip, "limit": limit})
        return _json(r)

    def get_use_case(self, use_case_id: str) -> Op[UseCaseInfo]:
        r = yield Call("GET", f"/api/v1/use-cases/{use_case_id}")
        return UseCaseInfo.model_validate(r.json())

    def update_use_case(
        self, use_case_id: str, *, name: str | None = None, description: str | None = None
    ) -> Op[UseCaseInfo]:
        """Rename or describe a use case; fields left as None are not changed."""
        body = _given(name=name, description=description)
        r = yield Call("PATCH", f"/api/v1/use-cases/{use_case_id}", json=body)
        return UseCaseInfo.model_validate(r.json())

    def delete_use_case(self, use_case_id: str) -> Op[None]:
        """Delete a use case with all its prompts and their versions."""
        yield Call("DELETE", f"/api/v1/use-cases/{use_case_id}")

    def create_prompt(self, use_case_id: str, name: str, **fields: Any) -> Op[dict[str, Any]]:
        body = {"name": name, **fields}
        r = yield Call("POST", f"/api/v1/use-cases/{use_case_id}/prompts", json=body)
        return _json(r)

    def list_prompts(
        self,
        use_case_id: str,
        tags: Sequence[str] | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> Op[list[dict[str, Any]]]:
        """The prompts of a use case; with ``tags``, those having every tag."""
        params: dict[str, Any] = {"skip": skip, "limit": limit}
        if tags:
            params["tags"] = ",".join(tags)
        r = yield Call("GET", f"/api/v1/use-cases/{use_case_id}/prompts", params=params)
        return _json(r)

    def get_prompt(self, prompt_id: str) -> Op[dict[str, Any]]:
        r = yield Call("GET", f"/api/v1/prompts/{prompt_id}")
        return _json(r)

    def update_prompt(
        self,
        prompt_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> Op[PromptInfo]:
        """Change a prompt's name, description or tags; fields left as None are not changed."""
        body = _given(name=name, description=description, tags=None if tags is None else list(tags))
        r = yield Call("PATCH", f"/api/v1/prompts/{prompt_id}", json=body)
        return PromptInfo.model_validate(r.json())

    def delete_prompt(self, prompt_id: str) -> Op[None]:
        yield Call("DELETE", f"/api/v1/prompts/{prompt_id}")

    def create_version(self, prompt_id: str, **body: Any) -> Op[dict[str, Any]]:
        r = yield Call("POST", f"/api/v1/prompts/{prompt_id}/versions", json=body)
        return _json(r)

    def list_versions(self, prompt_id: str) -> Op[list[dict[str, Any]]]:
        r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/versions")
        return _json(r)

    def get_version(self, prompt_id: str, version: int) -> Op[PromptVersionInfo]:
        r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/versions/{version}")
        return PromptVersionInfo.model_validate(r.json())

    def promote(self, prompt_id: str, version: int, label: str) -> Op[Any]:
        path = f"/api/v1/prompts/{prompt_id}/versions/{version}/promote"
        r = yield Call("POST", path, json={"label": label})
        return _json(r)

    def demote(self, prompt_id: str, version: int, label: str) -> Op[Any]:
        path = f"/api/v1/prompts/{prompt_id}/versions/{version}/demote"
        r = yield Call("POST", path, json={"label": label})
        return _json(r)

    def deploy(self, prompt_id: str, environment: str, version: int, notes: str = "") -> Op[Any]:
        body = {"environment": environment, "version": version, "notes": notes}
        r = yield Call("POST", f"/api/v1/prompts/{prompt_id}/deploy", json=body)
        return _json(r)

    def rollback(
        self, prompt_id: str, environment: str, notes: str | None = None
    ) -> Op[DeployResult]:
        """Move an environment back to the version it had before its last move."""
        body = {"environment": environment, "notes": notes}
        r = yield Call("POST", f"/api/v1/prompts/{prompt_id}/rollback", json=body)
        return DeployResult.model_validate(r.json())

    def deployments(self, prompt_id: str) -> Op[Any]:
        r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/deployments")
        return _json(r)

    def diff(self, prompt_id: str, from_version: int, to_version: int) -> Op[Any]:
        params = {"from": from_version, "to": to_version}
        r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/diff", params=params)
        return _json(r)

    def render(
        self,
        prompt_id: str,
        variables: dict[str, Any] | None = None,
        *,
        label: str | None = None,
        version: int | None = None,
        model_provider: str | None = None,
        model_name: str | None = None,
    ) -> Op[dict[str, Any]]:
        """Render by ``version`` or ``label`` (default production, else latest); the model
        names pick a model-specific variant."""
        body: dict[str, Any] = {"variables": variables or {}}
        body.update(
            _given(
                label=label, version=version, model_provider=model_provider, model_name=model_name
            )
        )
        r = yield Call("POST", f"/api/v1/prompts/{prompt_id}/render", json=body)
        return _json(r)

    def dependents(self, prompt_id: str) -> Op[list[Dependent]]:
        """The apps whose llm steps pin this prompt."""
        r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/dependents")
        return [Dependent.model_validate(d) for d in r.json()]

    def prompt_analytics(
        self,
        prompt_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str = "day",
    ) -> Op[PromptAnalytics]:
        """Figures of the runs that used the prompt, per version and per label."""
        params = _window(start, end, bucket)
        r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/analytics", params=params)
        return PromptAnalytics.model_validate(r.json())

    def search_prompts(
        self,
        query: str = "",
        *,
        tags: Sequence[str] = (),
        author: str | None = None,
        type: str | None = None,
        has_config: bool | None = None,
        page: int = 1,
        limit: int = 20,
    ) -> Op[PromptSearchResult]:
        """Prompts whose name, description or templates contain ``query``, filtered."""
        filters = {"tags": list(tags), **_given(author=author, type=type, hasConfig=has_config)}
        body = {"query": query, "filters": filters, "pagination": {"page": page, "limit": limit}}
        r = yield Call("POST", "/api/v1/prompts/search", json=body)
        return PromptSearchResult.model_validate(r.json())

    def bulk_prompts(
        self,
        operation: str,
        prompts: Sequence[str | tuple[str, int]],
        *,
        environment: str | None = None,
        notes: str | None = None,
        atomic: bool = False,
    ) -> Op[BulkResult]:
        """``deploy``/``label`` (items are ``(prompt_id, version)``) or ``delete`` (ids)."""
        items = [
            {"id": p} if isinstance(p, str) else {"id": p[0], "version": p[1]} for p in prompts
        ]
        body = {
            "operation": operation,
            "prompts": items,
            "atomic": atomic,
            **_given(environment=environment, notes=notes),
        }
        r = yield Call("POST", "/api/v1/prompts/bulk", json=body)
        return BulkResult.model_validate(r.json())

    # webhooks (admin tokens only)
    def create_webhook(self, url: str, events: Sequence[str], secret: str) -> Op[WebhookInfo]:
        """Subscribe ``url`` to events; deliveries are signed with ``secret``."""
        body = {"url": url, "events": list(events), "secret": secret}
        r = yield Call("POST", "/api/webhooks", json=body)
        return WebhookInfo.model_validate(r.json())

    def list_webhooks(self) -> Op[list[WebhookInfo]]:
        r = yield Call("GET", "/api/webhooks")
        return [WebhookInfo.model_validate(w) for w in r.json()]

    def get_webhook(self, webhook_id: str) -> Op[WebhookInfo]:
        r = yield Call("GET", f"/api/webhooks/{webhook_id}")
        return WebhookInfo.model_validate(r.json())

    def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        secret: str | None = None,
        active: bool | None = None,
    ) -> Op[WebhookInfo]:
        """Change a webhook, or pause (``active=False``) and resume it; None is unchanged.

        Pausing skips the deliveries still queued; events of the pause are never sent.
        """
        body = _given(
            url=url,
            events=None if events is None else list(events),
            secret=secret,
            active=active,
        )
        r = yield Call("PATCH", f"/api/webhooks/{webhook_id}", json=body)
        return WebhookInfo.model_validate(r.json())

    def delete_webhook(self, webhook_id: str) -> Op[None]:
        yield Call("DELETE", f"/api/webhooks/{webhook_id}")

    def webhook_deliveries(
        self, webhook_id: str, limit: int = 100
    ) -> Op[list[WebhookDeliveryInfo]]:
        """The delivery log of a webhook, newest first."""
        r = yield Call("GET", f"/api/webhooks/{webhook_id}/deliveries", params={"limit": limit})
        return [WebhookDeliveryInfo.model_validate(d) for d in r.json()]


def _stream_call(
    uuid: str, input: dict[str, Any] | None, session_id: str | None, sse: bool
) -> Call:
    path = f"/api/apps/{uuid}/run" + (f"/{session_id}" if session_id else "")
    call = Call("POST", path, json={"input": input or {}, "stream": True})
    if sse:
        call.headers["Accept"] = "text/event-stream"
    return call


def _json(response: httpx.Response) -> Any:
    return response.json()


def _given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None (PATCH bodies: absent means unchanged)."""
    return {k: v for k, v in fields.items() if v is not None}


def _window(start: datetime | None, end: datetime | None, bucket: str) -> dict[str, Any]:
    """Analytics query parameters (the API calls the bounds ``from`` and ``to``)."""
    params: dict[str, Any] = {"bucket": bucket}
    if start is not None:
        params["from"] = start.isoformat()
    if end is not None:
        params["to"] = end.isoformat()
    return params


class _Base:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        signing_secret: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        prompt_cache_ttl: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.signing_secret = signing_secret
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.prompt_cache_ttl = prompt_cache_ttl
        self._cache: dict[str, tuple[float, Any]] = {}
        self.ops = _Ops()

    def _cache_key(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        if name not in CACHED_OPS or self.prompt_cache_ttl <= 0:
            return None
        return json.dumps([name, args, kwargs], sort_keys=True, default=str)

    def _fresh(self, key: str | None) -> tuple[bool, Any]:
        if key is not None and key in self._cache:
            stored, value = self._cache[key]
            if time.monotonic() - stored < self.prompt_cache_ttl:
                return True, value
        return False, None

    def _remember(self, name: str, key: str | None, value: Any) -> None:
        if key is not None:
            self._cache[key] = (time.monotonic(), value)
        elif name in PROMPT_WRITES:
            self._cache = {k: (-math.inf, v) for k, (_, v) in self._cache.items()}

    def _stale(self, key: str | None, exc: Exception) -> Any:
        """The last good answer when the server is unreachable or failing; else re-raise."""
        down = isinstance(exc, httpx.TransportError) or (
            isinstance(exc, ServerError) and exc.status >= 500
        )
        if key is None or key not in self._cache or not down:
            raise exc
        return self._cache[key][1]

    def _headers(self, call: Call, url: httpx.URL) -> dict[str, str]:
        headers = dict(call.headers)
        if call.json is not None and call.content is None:
            headers.setdefault("Content-Type", "application/json")
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
            if self.signing_secret:
                stamp = signing.timestamp_now()
                headers[signing.TIMESTAMP_HEADER] = stamp
                headers[signing.SIGNATURE_HEADER] = signing.sign(
                    self.signing_secret,
                    self.token,
                    stamp,
                    call.method,
                    url.raw_path.decode(),
                    call.body(),
                )
        return headers

    def _request(self, client: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        url = httpx.URL(self.base_url + call.path, params=call.params)
        return client.build_request(
            call.method, str(url), content=call.body() or None, headers=self._headers(call, url)
        )

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None to give up."""
        if response.status_code not in (429, 503) or attempt >= self.max_retries:
            return None
        header = response.headers.get("retry-after", "")
        wait = float(header) if header.replace(".", "", 1).isdigit() else 0.5 * 2**attempt
        return min(wait, self.max_retry_wait)

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise error_from(response.status_code, body)

    @staticmethod
    def _line(raw: str, sse: bool) -> StreamChunk | None:
        if sse:
            if not raw.startswith("data: "):
                return None
            raw = raw[len("data: ") :]
        if not raw.strip():
            return None
        obj = json.loads(raw)
        if "error" in obj:
            raise error_from(200, obj, StreamError)
        return StreamChunk.model_validate(obj)


class Client(_Base):
    """Synchronous client (``httpx.Client``)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        http: httpx.Client | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, token, **kwargs)
        self._http = http or httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            response = self._http.send(self._request(self._http, call))
            wait = self._retry_wait(response, attempt)
            if wait is None:
                self._check(response)
                return response
            time.sleep(wait)
            attempt += 1

    def _drive(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = op.send(_NO_RESPONSE)
                else:
                    step = op.send(self._send(step))
        except StopIteration as done:
            return done.value

    def _call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        key = self._cache_key(name, args, kwargs)
        fresh, value = self._fresh(key)
        if fresh:
            return value
        try:
            value = self._drive(getattr(_Ops, name)(self.ops, *args, **kwargs))
        except (httpx.TransportError, ServerError) as exc:
            return self._stale(key, exc)
        self._remember(name, key, value)
        return value

    def __getattr__(self, name: str) -> Any:
        if not hasattr(_Ops, name):
            raise AttributeError(name)
        return lambda *a, **kw: self._call(name, *a, **kw)

    def stream(
        self,
        uuid: str,
        input: dict[str, Any] | None = None,
        session_id: str | None = None,
        *,
        sse: bool = False,
    ) -> Iterator[StreamChunk]:
        """Run with ``stream: true``; yields chunks, the last one with ``done=True``."""
        call = _stream_call(uuid, input, session_id, sse)
        attempt = 0
        while True:
            response = self._http.send(self._request(self._http, call), stream=True)
            wait = self._retry_wait(response, attempt)
            if wait is None:
                break
            response.close()
            time.sleep(wait)
            attempt += 1
        try:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            for raw in response.iter_lines():
                chunk = self._line(raw, sse)
                if chunk is not None:
                    yield chunk
        finally:
            response.close()


class AsyncClient(_Base):
    """Asynchronous client (``httpx.AsyncClient``), the same operations awaited."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, token, **kwargs)
        self._http = http or httpx.AsyncClient(timeout=self.timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            response = await self._http.send(self._request(self._http, call))
            wait = self._retry_wait(response, attempt)
            if wait is None:
                self._check(response)
                return response
            await asyncio.sleep(wait)
            attempt += 1

    async def _drive(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = op.send(_NO_RESPONSE)
                else:
                    step = op.send(await self._send(step))
        except StopIteration as done:
            return done.value

    async def _call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        key = self._cache_key(name, args, kwargs)
        fresh, value = self._fresh(key)
        if fresh:
            return value
        try:
            value = await self._drive(getattr(_Ops, name)(self.ops, *args, **kwargs))
        except (httpx.TransportError, ServerError) as exc:
            return self._stale(key, exc)
        self._remember(name, key, value)
        return value

    def __getattr__(self, name: str) -> Any:
        if not hasattr(_Ops, name):
            raise AttributeError(name)
        return lambda *a, **kw: self._call(name, *a, **kw)

    async def stream(
        self,
        uuid: str,
        input: dict[str, Any] | None = None,
        session_id: str | None = None,
        *,
        sse: bool = False,
    ) -> AsyncIterator[StreamChunk]:
        """Run with ``stream: true``; yields chunks, the last one with ``done=True``."""
        call = _stream_call(uuid, input, session_id, sse)
        attempt = 0
        while True:
            response = await self._http.send(self._request(self._http, call), stream=True)
            wait = self._retry_wait(response, attempt)
            if wait is None:
                break
            await response.aclose()
            await asyncio.sleep(wait)
            attempt += 1
        try:
            if response.status_code >= 400:
                await response.aread()
                self._check(response)
            async for raw in response.aiter_lines():
                chunk = self._line(raw, sse)
                if chunk is not None:
                    yield chunk
        finally:
            await response.aclose()
