"""Model providers (``/api/providers``, admin only): OpenAI-compatible servers kept in
the database, and a connection test for any provider.

A stored provider is ``{name, base_url, api_key?, models?, headers?}``. Its key and
headers are encrypted with the server key (``appforge/core/keys.py``) and never
returned: answers say ``has_key`` and name the headers. Its models are named
``<name>:<model>`` in apps and alias targets. Runs use a change at once, in every
process (on PostgreSQL the others are notified: ``appforge.core.invalidation``).

Providers set by the environment (``APPFORGE_PROVIDERS``) and the built-in ``local``
and ``openai`` are listed too, read-only; an environment provider wins over a stored
one of the same name (that one is listed with ``active: false``).

Base URLs are set by admins, so they may reach loopback and private addresses
(an Ollama or llama.cpp server on the same machine is the common case): unlike
URL entries and webhooks, no SSRF filter applies. What a stored URL can reach is
what an admin could reach with ``APPFORGE_PROVIDERS``; the connection test only
sends ``GET <base_url>/models`` with the provider's own key and headers, and answers
the model ids or the failure, never the server's body beyond its error message.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.access import Admin
from api.audit import record
from api.deps import DbSession, Who
from api.errors import ApiError, ConflictError, NotFoundError
from api.state import api_state
from appforge.core.db import utcnow
from appforge.core.invalidation import MODELS
from appforge.core.keys import ServerKey
from appforge.core.settings import (
    BUILTIN_PROVIDERS,
    check_api_key,
    check_headers,
    check_provider_name,
)
from providers.catalog import catalog_changed
from providers.errors import ModelNotFoundError, ProviderError
from providers.local import DEMO_LABEL, MODEL_NAME, LocalProvider
from providers.openai_compat import OpenAICompatProvider
from providers.registry import ModelView, ProviderRegistry, Source
from providers.tables import StoredAlias, StoredProvider

router = APIRouter(prefix="/api/providers", tags=["providers"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_URL_CHARS = 2000
MAX_KEY_CHARS = 4096
# Model names as servers spell them ("llama3.2:latest", "Qwen/Qwen2.5-1.5B-Instruct").
ModelName = Annotated[str, StringConstraints(pattern=r"^[^\s\x00-\x1f\x7f]{1,200}$")]


def check_base_url(url: str) -> str:
    """An http(s) URL with a host, no credentials, query or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "base_url must be an http(s) URL with a host, e.g. http://127.0.0.1:11434/v1"
        )
    if re.search(r"[\s\x00-\x1f\x7f]", url):
        raise ValueError("base_url may not contain spaces or control characters")
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url may not carry a user or password: put the key in api_key")
    if parts.query or parts.fragment:
        raise ValueError("base_url may not have a query or fragment")
    _ = parts.port  # ValueError when the port is not a number in 0-65535
    try:
        httpx.URL(url)  # what the HTTP client will make of it (IDNA hosts included)
        parts.hostname.encode("idna").decode("idna")  # what the resolver will
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ValueError(f"base_url's host is not a usable host name: {exc}") from None
    return url


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        description="Prefix of its models (`<name>:<model>`): 1-64 letters, digits, `_ . -`; "
        "not local or openai",
    )
    base_url: str = Field(max_length=MAX_URL_CHARS, description="The server's /v1 URL")
    api_key: str | None = Field(
        default=None, min_length=1, max_length=MAX_KEY_CHARS, description="Never returned"
    )
    models: list[ModelName] = Field(
        default_factory=list, max_length=200, description="Model names to offer; empty: ask"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers (values never returned)"
    )

    _name = field_validator("name")(check_provider_name)
    _url = field_validator("base_url")(check_base_url)
    _key = field_validator("api_key")(check_api_key)
    _headers = field_validator("headers")(check_headers)


class ProviderUpdate(BaseModel):
    """The fields to change; absent (or null) ones stay. ``api_key: ""`` removes the key,
    ``headers: {}`` removes the headers."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    api_key: str | None = Field(default=None, max_length=MAX_KEY_CHARS)
    models: list[ModelName] | None = Field(default=None, max_length=200)
    headers: dict[str, str] | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_headers(value)

    _key = field_validator("api_key")(check_api_key)


class ProviderConfigPublic(BaseModel):
    name: str
    kind: Literal["local", "openai-compatible"]
    source: Source = Field(
        description="builtin (local, openai), env (APPFORGE_PROVIDERS: wins over a stored "
        "one of the same name) or database (editable)"
    )
    active: bool = Field(description="false: a provider of the environment has this name")
    base_url: str | None = Field(description="Without any user:password part")
    has_key: bool
    headers: list[str] = Field(description="The names of its extra headers")
    models: list[str] = Field(description="Model names offered for it (empty: ask the server)")
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ProviderTestPublic(BaseModel):
    name: str
    server: str | None = Field(description="scheme://host:port it answered from")
    models: list[str] = Field(description="The model ids the server lists")
    latency_ms: float


# --- reading ------------------------------------------------------------------------------


def _shown_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{host}{port}").geturl()


def _stored_public(row: StoredProvider, key: ServerKey, view: ModelView) -> ProviderConfigPublic:
    headers = json.loads(key.decrypt(row.headers)) if row.headers else {}
    return ProviderConfigPublic(
        name=row.name,
        kind="openai-compatible",
        source="database",
        active=view.server_sources.get(row.name) == "database",
        base_url=row.base_url,
        has_key=row.api_key is not None,
        headers=sorted(headers),
        models=list(row.models or []),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _configured(name: str, registry: ProviderRegistry) -> ProviderConfigPublic | None:
    """A provider of the settings (built in, or APPFORGE_PROVIDERS); None if none."""
    if name == "local":
        return ProviderConfigPublic(
            name=name,
            kind="local",
            source="builtin",
            active=True,
            base_url=None,
            has_key=False,
            headers=[],
            models=[MODEL_NAME],
            description=DEMO_LABEL,
        )
    view = registry.view()
    source: Source
    if name == "openai":
        server, source = registry.settings.openai, "builtin"
    elif view.server_sources.get(name) == "env":
        server, source = view.servers[name], "env"
    else:
        return None
    provider = registry.provider(name)
    has_key = provider.has_key if isinstance(provider, OpenAICompatProvider) else False
    return ProviderConfigPublic(
        name=name,
        kind="openai-compatible",
        source=source,
        active=True,
        base_url=_shown_url(server.base_url),
        has_key=has_key,
        headers=sorted(server.headers),
        models=[],
    )


def _stored(db: Session, name: str) -> StoredProvider | None:
    return db.get(StoredProvider, name)


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no model provider '{name}'", code="PROVIDER_NOT_FOUND")


def _editable(db: Session, name: str, registry: ProviderRegistry) -> StoredProvider:
    """The stored provider ``name``: 409 for one of the settings, 404 for none at all."""
    row = _stored(db, name)
    if row is not None:
        return row
    if _configured(name, registry) is not None:
        raise ConflictError(
            f"the provider '{name}' is set by the server's settings (built in or "
            "APPFORGE_PROVIDERS), not stored: change it there",
            code="PROVIDER_READ_ONLY",
            details={"provider": name},
        )
    raise _not_found(name)


def _changed(db: Session) -> None:
    db.execute(catalog_changed())


def _audit_details(row: StoredProvider, **extra: Any) -> dict[str, Any]:
    # The host only: never the key, the header values or the URL's path.
    return {"host": urlsplit(row.base_url).hostname, "has_key": row.api_key is not None, **extra}


def _saved(request: Request) -> None:
    """The catalog changed (committed): the next run of every process reads it again."""
    api_state(request).invalidation.publish(MODELS)


# --- routes ---------------------------------------------------------------------------------


@router.post("", response_model=ProviderConfigPublic, status_code=status.HTTP_201_CREATED)
def create_provider_route(
    request: Request, body: ProviderCreate, db: DbSession, token: Admin, who: Who
) -> ProviderConfigPublic:
    """Store an OpenAI-compatible server; its models are then ``<name>:<model>``.

    The key and header values are encrypted at rest and never returned. A name
    already stored is 409 ``PROVIDER_EXISTS``; one set by ``APPFORGE_PROVIDERS``
    may be stored, but the environment's wins (the listing says which is active).
    """
    if _stored(db, body.name) is not None:
        raise ConflictError(
            f"a provider named '{body.name}' exists", code="PROVIDER_EXISTS",
            details={"provider": body.name},
        )  # fmt: skip
    key = api_state(request).key
    now = utcnow()
    row = StoredProvider(
        name=body.name,
        base_url=body.base_url,
        api_key=key.encrypt(body.api_key) if body.api_key else None,
        headers=key.encrypt(json.dumps(body.headers)) if body.headers else None,
        models=list(dict.fromkeys(body.models)),
        created_by=token.name,
        created_at=now,
        updated_at=now,
    )
    db.add(row)
    _changed(db)
    record(db, who, "provider.created", row.name, _audit_details(row, headers=sorted(body.headers)))
    db.commit()
    _saved(request)
    return _stored_public(row, key, api_state(request).models.view())


@router.get("", response_model=list[ProviderConfigPublic])
def list_providers_route(request: Request, db: DbSession, _: Admin) -> list[ProviderConfigPublic]:
    """Every provider by name: the built-in ones, the environment's, and the stored ones
    (a stored one hidden by an environment provider of its name has ``active: false``)."""
    registry = api_state(request).models
    view = registry.view()
    names = [*BUILTIN_PROVIDERS, *sorted(n for n, s in view.server_sources.items() if s == "env")]
    found = [p for p in (_configured(n, registry) for n in names) if p is not None]
    key = api_state(request).key
    found += [_stored_public(r, key, view) for r in db.scalars(select(StoredProvider))]
    return sorted(found, key=lambda p: (p.name, not p.active))


@router.get("/{name}", response_model=ProviderConfigPublic)
def get_provider_route(
    name: str, request: Request, db: DbSession, _: Admin
) -> ProviderConfigPublic:
    """One provider: the stored one of that name, else the settings' (404 if neither)."""
    registry = api_state(request).models
    row = _stored(db, name)
    if row is not None:
        return _stored_public(row, api_state(request).key, registry.view())
    found = _configured(name, registry)
    if found is None:
        raise _not_found(name)
    return found


@router.patch("/{name}", response_model=ProviderConfigPublic)
def update_provider_route(
    name: str, request: Request, body: ProviderUpdate, db: DbSession, _: Admin, who: Who
) -> ProviderConfigPublic:
    """Change a stored provider's URL, key (``""`` removes it), models or headers (``{}``
    removes them); absent fields stay. Providers of the settings are 409 ``PROVIDER_READ_ONLY``."""
    registry = api_state(request).models
    row = _editable(db, name, registry)
    key = api_state(request).key
    if body.base_url is not None:
        row.base_url = body.base_url
    if body.api_key is not None:
        row.api_key = key.encrypt(body.api_key) if body.api_key else None
    if body.models is not None:
        row.models = list(dict.fromkeys(body.models))
    if body.headers is not None:
        row.headers = key.encrypt(json.dumps(body.headers)) if body.headers else None
    changed = sorted(body.model_dump(exclude_none=True))  # names only, never values
    if changed:
        row.updated_at = utcnow()
        _changed(db)
        record(db, who, "provider.updated", row.name, _audit_details(row, changed=changed))
        db.commit()
        _saved(request)
    return _stored_public(row, key, registry.view())


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_provider_route(
    name: str, request: Request, db: DbSession, _: Admin, who: Who
) -> Response:
    """Delete a stored provider. Refused (409 ``PROVIDER_IN_USE``) while a stored alias
    points at it; apps naming ``<name>:<model>`` fail with ``MODEL_NOT_FOUND`` after."""
    row = _editable(db, name, api_state(request).models)
    users = sorted(
        a.name for a in db.scalars(select(StoredAlias)) if a.target.partition(":")[0] == name
    )
    if users:
        raise ConflictError(
            f"the aliases {', '.join(users)} point at provider '{name}': repoint or delete "
            "them first",
            code="PROVIDER_IN_USE",
            details={"provider": name, "aliases": users},
        )
    record(db, who, "provider.deleted", row.name, _audit_details(row))
    db.delete(row)
    _changed(db)
    db.commit()
    _saved(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _list_models(registry: ProviderRegistry, name: str, timeout: float) -> ProviderTestPublic:
    if name not in registry.provider_names():  # may read the catalog: off the event loop
        raise _not_found(name)
    started = time.perf_counter()
    provider = registry.provider(name)
    if isinstance(provider, LocalProvider):
        if not provider.is_available():
            raise ModelNotFoundError("the bundled GGUF model file is missing")
        models, server = [MODEL_NAME], None
    elif isinstance(provider, OpenAICompatProvider):
        provider.check_model("")  # a key where one is needed (422 MODEL_NOT_FOUND)
        try:
            models, server = provider.list_models(timeout), provider.server
        except ProviderError as exc:
            raise ApiError(
                exc.message,
                code="PROVIDER_TEST_FAILED",
                status_code=502,
                details={**exc.details, "cause": exc.code},
            ) from exc
    else:
        raise ModelNotFoundError(f"the provider '{name}' cannot be tested")
    latency = round((time.perf_counter() - started) * 1000, 1)
    return ProviderTestPublic(name=name, server=server, models=models, latency_ms=latency)


@router.post("/{name}/test", response_model=ProviderTestPublic)
async def test_provider_route(
    name: str,
    request: Request,
    _: Admin,
    timeout: Annotated[
        float, Query(ge=0.1, le=30, description="Seconds the server may take to answer")
    ] = 5.0,
) -> ProviderTestPublic:
    """Test the connection: ``GET <base_url>/models`` of the provider in force under this
    name, once, within ``timeout``; answers the model ids the server lists.

    A failure is 502 ``PROVIDER_TEST_FAILED``; its message says what failed (cannot
    connect, no answer in time, credentials refused, not a model list) and
    ``details.cause`` is the provider error code (``PROVIDER_UNAVAILABLE``,
    ``PROVIDER_AUTH_FAILED``, ``PROVIDER_ERROR``, ...), ``details.status`` the
    server's HTTP status when it answered one.
    """
    return await run_in_threadpool(_list_models, api_state(request).models, name, timeout)
