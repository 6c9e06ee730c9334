"""Who may call what: one declared rule per route.

Every token has one role:

- ``admin``: everything;
- ``editor``: apps, datasources, prompts, runs, sessions, analytics (not tokens,
  webhooks or the audit log);
- ``viewer``: reads what an editor can change, runs nothing;
- ``runner``: runs apps, and reads only its own sessions and runs.

A token may be narrowed to apps (``apps``): it can then use only the routes
about one of those apps, and lists show only those apps. Each route takes one
of the rules below as a dependency; the rule refuses the caller (401, 403)
before the route runs, and ``create_app`` publishes it in the OpenAPI document
as ``x-access`` (a test walks every route and role against it). Rules with
scope ``own`` leave the last word to the route: it shows a runner only what
the runner made, and answers 404 for the rest, so that another key's session
is not even revealed to exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.auth import Principal
from api.deps import optional_token, token_unless_database_away
from api.errors import AuthError, ForbiddenError

Scope = Literal["global", "app", "own", "list", "model", "none"]
ALL_ROLES = frozenset({"admin", "editor", "viewer", "runner"})


@dataclass(frozen=True)
class Rule:
    """The roles a route admits, how it is scoped to apps, and whether it admits
    callers without a token.

    - ``global``: not about one app; a token narrowed to apps is refused;
    - ``app``: about the app in the path (``{app_uuid}``): a narrowed token must
      include it;
    - ``own``: about a session or run, checked by the route (owner and app);
    - ``list``: a list the route narrows to the token's apps;
    - ``model``: about the app an OpenAI-style ``model`` names (in the body or the
      path, by uuid or name): the route resolves it and calls
      :func:`check_app_scope`;
    - ``none``: nothing of any app's; no token is read (liveness).
    """

    roles: frozenset[str]
    scope: Scope = "global"
    anonymous: bool = False

    async def __call__(
        self, request: Request, token: Annotated[Principal | None, Depends(optional_token)]
    ) -> Principal | None:
        if token is None:
            if self.anonymous:
                return None
            raise AuthError(
                "this endpoint needs a token: send 'Authorization: Token <token>'",
                headers={"WWW-Authenticate": "Token"},
            )
        if token.role not in self.roles:
            raise ForbiddenError(
                f"a {token.role} token may not do this (allowed: {', '.join(self.allowed)})",
                details={"role": token.role, "allowed": self.allowed},
            )
        if token.apps is not None:
            self._check_scope(request, token)
        return token

    def _check_scope(self, request: Request, token: Principal) -> None:
        if self.scope == "global":
            raise ForbiddenError(
                "this token is limited to some apps, and this is not about one app",
                code="APP_FORBIDDEN",
            )
        if self.scope == "app":
            check_app_scope(token, str(request.path_params.get("app_uuid", "")))

    @property
    def allowed(self) -> list[str]:
        return [r for r in ("admin", "editor", "viewer", "runner") if r in self.roles]

    def describe(self) -> dict[str, Any]:
        """The rule as published in OpenAPI (``x-access``)."""
        return {"roles": self.allowed, "scope": self.scope, "anonymous": self.anonymous}


@dataclass(frozen=True)
class _Unread(Rule):
    """Anyone, and a token sent is not even read: for liveness, which must answer while
    the database (where tokens are looked up) is away, and whatever token a probe sends
    (a revoked one was a 401, and a probe that fails has its process restarted)."""

    async def __call__(self) -> None:  # type: ignore[override]
        return None


@dataclass(frozen=True)
class _Readiness(Rule):
    """Anyone, and a token sent is read to show why checks failed; a token that cannot
    be looked up because the database is away counts as none, so readiness answers
    its own 503 naming the database rather than the lookup's."""

    async def __call__(
        self,
        request: Request,
        token: Annotated[Principal | None, Depends(token_unless_database_away)],
    ) -> Principal | None:
        return await super().__call__(request, token)


def check_app_scope(token: Principal | None, app_uuid: str) -> None:
    """Refuse (403 ``APP_FORBIDDEN``) a token narrowed to other apps; for routes whose
    app is known only after they resolve it (scope ``model``)."""
    if token is not None and not token.may_use_app(app_uuid):
        raise ForbiddenError(
            f"this token may not use app '{app_uuid}'",
            code="APP_FORBIDDEN",
            details={"app_uuid": app_uuid},
        )


def _rule(*roles: str, scope: Scope = "global", anonymous: bool = False) -> Rule:
    return Rule(frozenset(roles), scope, anonymous)


READ = _rule("admin", "editor", "viewer")
WRITE = _rule("admin", "editor")
ADMIN = _rule("admin")
ANY_TOKEN = _rule(*ALL_ROLES, scope="own")
APP_READ = _rule("admin", "editor", "viewer", scope="app")
APP_WRITE = _rule("admin", "editor", scope="app")
APP_LIST = _rule("admin", "editor", "viewer", scope="list")
# Runs: any token that runs, or nobody for a public app (the run service checks).
APP_RUN = _rule("admin", "editor", "runner", scope="app", anonymous=True)
# Lists of runs and sessions are for readers, never for runner keys: a runner key may be
# in anyone's hands (a widget's page, a chat link), and its list would show every
# visitor's conversations. A runner reads a session or a run by its id.
APP_RUNS = _rule("admin", "editor", "viewer", scope="app")
OWN_READ = _rule("admin", "editor", "viewer", "runner", scope="own")
# Runs across apps: the route keeps to the token's apps.
RUNS_LIST = _rule("admin", "editor", "viewer", scope="list")
# A session's turns: also for the anonymous caller that made it (its id is its key).
SESSION_READ = _rule("admin", "editor", "viewer", "runner", scope="own", anonymous=True)
# What a chat page shows of an app: for anyone who may run it, or view it.
APP_PAGE = _rule("admin", "editor", "viewer", "runner", scope="app", anonymous=True)
OWN_WRITE = _rule("admin", "editor", "runner", scope="own")
PUBLIC = _rule(*ALL_ROLES, anonymous=True)
LIVENESS = _Unread(ALL_ROLES, scope="none", anonymous=True)
READINESS = _Readiness(ALL_ROLES, anonymous=True)
# The OpenAI-compatible runs: the app is the body's (or path's) ``model``.
MODEL_RUN = _rule("admin", "editor", "runner", scope="model", anonymous=True)
# The apps a caller may run, as OpenAI models (public ones for anonymous callers).
MODEL_LIST = _rule("admin", "editor", "runner", scope="list", anonymous=True)

Reader = Annotated[Principal, Depends(READ)]
Writer = Annotated[Principal, Depends(WRITE)]
Admin = Annotated[Principal, Depends(ADMIN)]
AnyToken = Annotated[Principal, Depends(ANY_TOKEN)]
AppReader = Annotated[Principal, Depends(APP_READ)]
AppWriter = Annotated[Principal, Depends(APP_WRITE)]
AppLister = Annotated[Principal, Depends(APP_LIST)]
AppRunCaller = Annotated[Principal | None, Depends(APP_RUN)]
AppRunsReader = Annotated[Principal, Depends(APP_RUNS)]
OwnReader = Annotated[Principal, Depends(OWN_READ)]
RunsLister = Annotated[Principal, Depends(RUNS_LIST)]
SessionReader = Annotated[Principal | None, Depends(SESSION_READ)]
AppPageReader = Annotated[Principal | None, Depends(APP_PAGE)]
OwnWriter = Annotated[Principal, Depends(OWN_WRITE)]
Anyone = Annotated[Principal | None, Depends(PUBLIC)]
Unread = Annotated[None, Depends(LIVENESS)]
ReadinessCaller = Annotated[Principal | None, Depends(READINESS)]
ModelRunCaller = Annotated[Principal | None, Depends(MODEL_RUN)]
ModelLister = Annotated[Principal | None, Depends(MODEL_LIST)]


def route_rule(route: APIRoute) -> Rule | None:
    """The rule a route declares among its dependencies, if any."""
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Rule):
            return dependant.call
        pending.extend(dependant.dependencies)
    return None


def publish_rules(routes: list[Any]) -> None:
    """Put each route's rule in its OpenAPI operation as ``x-access``."""
    for route in routes:
        if isinstance(route, APIRoute):
            rule = route_rule(route)
            if rule is not None:
                route.openapi_extra = {**(route.openapi_extra or {}), "x-access": rule.describe()}
