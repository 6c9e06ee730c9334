"""CORS: which browser origins may call the run endpoints, and read the answer.

An origin is allowed by one of three lists:

- ``APPFORGE_CORS__ORIGINS``: every endpoint (e.g. a builder on another host);
- an app's ``origins:`` in its YAML: that app's run endpoints
  (``POST /api/apps/<uuid>/run[/<session>]``, ``GET /api/apps/<uuid>/page``),
  its sessions (``GET /api/sessions/<id>``) and ``/v1/*`` calls about it;
- a runner key's ``origins``: whatever that key may do (any other origin is
  403 ``ORIGIN_FORBIDDEN``, see ``api.deps``).

A request with an ``Origin`` header on one of those endpoints gets
``Access-Control-Allow-Origin`` echoing it (with ``Vary: Origin`` and
``Access-Control-Expose-Headers``) when it is allowed, and nothing when it is
not, so the browser keeps the answer from the page.

A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) carries no
key, so it cannot be checked precisely: it is answered 204 with the allowed
methods and headers when the origin is listed by the app of the path, by any
live runner key that may use that app, or by the global setting; on paths that
name no app (a session, ``/v1/*``), by any app or runner key. The request that
follows is then checked precisely: the global list, the key it carries, and the
app it is about (the path's, the one its route names with :func:`about_app`,
or on ``/v1/*`` the apps its key is narrowed to).

An app's origins and public rate are read from its stored document once per
version (:class:`OriginPolicies`): a request costs one indexed select of the
app's version, never a parse of its YAML.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.tables import Token
from appforge.core.db import utcnow
from appforge.core.settings import CorsSettings
from runs.tables import App

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, X-API-Key, X-Session-ID, X-Request-ID"
EXPOSE_HEADERS = (
    "X-Session-ID, X-Run-ID, X-Request-ID, Retry-After, "
    "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
)
# The run endpoints of the app in the path, and those whose app the request tells.
_APP_PATH = re.compile(r"^/api/apps/([^/]+)/(?:run(?:/[^/]+)?|page)$")
_OTHER_PATH = re.compile(r"^/(?:api/sessions/[^/]+$|v1/)")


@dataclass(frozen=True)
class AppPolicy:
    """What the CORS middleware and anonymous limits need of an app."""

    public: bool
    origins: frozenset[str]
    public_rate: str | None


class OriginPolicies:
    """Apps' origins and public rates by ``(uuid, version)``; runner keys' origins.

    Blocking (database reads): call from a worker thread.
    """

    def __init__(self, factory: sessionmaker[Session], size: int = 1024) -> None:
        self.db = factory
        self.size = size
        self._cache: OrderedDict[tuple[str, int], tuple[frozenset[str], str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def app(self, app_uuid: str) -> AppPolicy | None:
        """The app's policy, or None if there is no such app."""
        with self.db() as db:
            row = db.execute(select(App.version, App.public).where(App.uuid == app_uuid)).first()
            if row is None:
                return None
            origins, rate = self._document_part(db, app_uuid, row.version)
        return AppPolicy(bool(row.public), origins, rate)

    def _document_part(
        self, db: Session, app_uuid: str, version: int
    ) -> tuple[frozenset[str], str | None]:
        key = (app_uuid, version)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        document: dict[str, Any] = db.scalar(select(App.document).where(App.uuid == app_uuid)) or {}
        limits = document.get("limits") or {}
        part = (frozenset(document.get("origins") or ()), limits.get("public_rate"))
        with self._lock:
            self._cache[key] = part
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return part

    def key_origins(self, app_uuid: str | None) -> frozenset[str]:
        """Origins of live runner keys that may use this app (None: any app)."""
        now = utcnow()
        query = select(Token.apps, Token.origins, Token.expires_at).where(
            Token.role == "runner", Token.revoked_at.is_(None)
        )
        found: set[str] = set()
        with self.db() as db:
            for apps, origins, expires_at in db.execute(query):
                if not origins or (expires_at is not None and expires_at <= now):
                    continue
                if app_uuid is None or apps is None or app_uuid in apps:
                    found.update(origins)
        return frozenset(found)

    def any_app_origins(self) -> frozenset[str]:
        """Origins listed by any app's document."""
        found: set[str] = set()
        with self.db() as db:
            for app_uuid, version in db.execute(select(App.uuid, App.version)).all():
                found.update(self._document_part(db, app_uuid, version)[0])
        return frozenset(found)

    def preflight_allows(self, origin: str, app_uuid: str | None) -> bool:
        """Whether a preflight from ``origin`` about this app (None: unknown) may go on."""
        if app_uuid is not None:
            policy = self.app(app_uuid)
            if policy is not None and origin in policy.origins:
                return True
            return origin in self.key_origins(app_uuid)
        return origin in self.key_origins(None) or origin in self.any_app_origins()


def about_app(request: Request, app_uuid: str) -> None:
    """Tell the CORS middleware which app a request is about, when its path does not."""
    request.state.cors_app = app_uuid


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _policies(scope: Scope) -> OriginPolicies:
    policies: OriginPolicies = scope["app"].state.api.origins
    return policies


class CorsMiddleware:
    """Answer preflights and mark allowed answers on the run endpoints (and, for the
    global origins, on every endpoint)."""

    def __init__(self, app: ASGIApp, settings: CorsSettings) -> None:
        self.app = app
        self.everywhere = frozenset(settings.origins)
        self.max_age = str(settings.max_age_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        match = _APP_PATH.match(scope["path"])
        app_uuid = match.group(1) if match else None
        everywhere = origin.lower() in self.everywhere
        if not (everywhere or match or _OTHER_PATH.match(scope["path"])):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            allowed = everywhere or await run_in_threadpool(
                _policies(scope).preflight_allows, origin.lower(), app_uuid
            )
            await self._preflight(origin, allowed)(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                allowed = everywhere or await _request_allowed(scope, origin.lower(), app_uuid)
                message["headers"] = _marked(list(message.get("headers", [])), origin, allowed)
            await send(message)

        await self.app(scope, receive, send_marked)

    def _preflight(self, origin: str, allowed: bool) -> Response:
        headers = {"Vary": "Origin"}
        if allowed:
            headers.update(
                {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Expose-Headers": EXPOSE_HEADERS,
                    "Access-Control-Max-Age": self.max_age,
                }
            )
        return Response(status_code=204, headers=headers)


async def _request_allowed(scope: Scope, origin: str, app_uuid: str | None) -> bool:
    """The precise check of a request (not a preflight): its key, then its app."""
    state = scope.get("state") or {}
    key_origins = state.get("key_origins")
    if key_origins is not None and origin in key_origins:
        return True
    apps = {a for a in (app_uuid, state.get("cors_app")) if a is not None}
    key_apps = state.get("key_apps")
    if scope["path"].startswith("/v1/") and key_apps is not None:
        apps.update(key_apps)
    for one in sorted(apps):
        policy = await run_in_threadpool(_policies(scope).app, one)
        if policy is not None and origin in policy.origins:
            return True
    return False


def _marked(
    raw: list[tuple[bytes, bytes]], origin: str, allowed: bool
) -> list[tuple[bytes, bytes]]:
    vary = [v for k, v in raw if k.lower() == b"vary"]
    raw = [(k, v) for k, v in raw if k.lower() != b"vary"]
    raw.append((b"vary", b", ".join([*vary, b"Origin"])))
    if allowed:
        raw.append((b"access-control-allow-origin", origin.encode("latin-1")))
        raw.append((b"access-control-expose-headers", EXPOSE_HEADERS.encode()))
    return raw
