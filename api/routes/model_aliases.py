"""Model aliases (``/api/models/aliases``): the names apps use (``model: default``) and the
``<provider>:<model>`` each points at.

Aliases come from the built-in default (``default`` -> ``local:smollm2``, when
``APPFORGE_MODELS`` is not set), from the database (set here by admins) and from
``APPFORGE_MODELS``, each winning over the one before for a name they share. So
``PUT /api/models/aliases/default`` points every app using ``default`` at a real
server, unless the environment sets ``default`` itself (the listing then shows the
stored one with ``active: false``). Runs use a change at once, in every process (on
PostgreSQL the others are notified: ``appforge.core.invalidation``).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.access import Admin, Reader
from api.audit import Actor, record
from api.deps import DbSession, Who
from api.errors import ConflictError, NotFoundError
from api.state import api_state
from appforge.core.db import utcnow
from appforge.core.invalidation import MODELS
from providers.catalog import catalog_changed
from providers.local import DEMO_LABEL, MODEL_NAME
from providers.registry import ModelView, Source
from providers.tables import StoredAlias

router = APIRouter(prefix="/api/models/aliases", tags=["models"])

ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TARGET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}:[^\s\x00-\x1f\x7f]{1,200}$"
LOCAL_TARGET = f"local:{MODEL_NAME}"
AliasName = Path(pattern=ALIAS_PATTERN, description="1-64 letters, digits, `_ . -`")


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(
        pattern=TARGET_PATTERN,
        description="`<provider>:<model>`, e.g. `ollama:llama3.2` (the provider must exist)",
    )


class AliasConfigPublic(BaseModel):
    name: str
    target: str
    source: Source = Field(
        description="builtin (the default when APPFORGE_MODELS is unset), database, or env "
        "(APPFORGE_MODELS: wins over a stored alias of the same name)"
    )
    active: bool = Field(description="false: the environment sets an alias of this name")
    description: str | None = Field(default=None, description="What the target is, if known")
    updated_at: datetime | None = None


def describe(target: str, view: ModelView) -> str | None:
    """The label of what an alias (or model name) finally resolves to, when there is one."""
    seen: set[str] = set()
    while target in view.aliases and target not in seen:
        seen.add(target)
        target = view.aliases[target]
    return DEMO_LABEL if target == LOCAL_TARGET else None


def _aliases(view: ModelView, stored: list[StoredAlias]) -> list[AliasConfigPublic]:
    found = [
        AliasConfigPublic(
            name=name,
            target=target,
            source=view.alias_sources[name],
            active=True,
            description=describe(target, view),
        )
        for name, target in view.aliases.items()
    ]
    by_name = {a.name: a for a in found}
    for row in stored:
        shown = by_name.get(row.name)
        if shown is not None and shown.source == "database":
            shown.updated_at = row.updated_at
        elif shown is not None:  # hidden by APPFORGE_MODELS
            found.append(
                AliasConfigPublic(
                    name=row.name,
                    target=row.target,
                    source="database",
                    active=False,
                    description=describe(row.target, view),
                    updated_at=row.updated_at,
                )
            )
    return sorted(found, key=lambda a: (a.name, not a.active))


@router.get("", response_model=list[AliasConfigPublic])
def list_model_aliases_route(request: Request, db: DbSession, _: Reader) -> list[AliasConfigPublic]:
    """Every alias with its target and source, without contacting any server
    (``GET /api/models`` also says which answer)."""
    view = api_state(request).models.view()
    return _aliases(view, list(db.scalars(select(StoredAlias))))


def _store(db: Session, name: str, target: str, actor: Actor) -> StoredAlias:
    row = db.get(StoredAlias, name)
    if row is None:
        row = StoredAlias(name=name, target=target)
        db.add(row)
    row.target, row.updated_by, row.updated_at = target, actor.name, utcnow()
    db.execute(catalog_changed())
    record(db, actor, "model_alias.set", name, {"target": target})
    db.commit()
    return row


def _saved(request: Request) -> None:
    """The catalog changed (committed): the next run of every process reads it again."""
    api_state(request).invalidation.publish(MODELS)


@router.put("/{alias}", response_model=AliasConfigPublic)
async def set_model_alias_route(
    request: Request, body: AliasSet, _: Admin, who: Who, alias: str = AliasName
) -> AliasConfigPublic:
    """Point an alias at ``<provider>:<model>`` (created, or repointed), e.g. ``default``
    at a model of a stored provider. The provider must exist and be usable (422
    ``MODEL_NOT_FOUND`` otherwise, nothing stored); no server is contacted."""
    registry = api_state(request).models
    await run_in_threadpool(registry.check, body.target)

    def save() -> AliasConfigPublic:
        with api_state(request).db() as db:
            row = _store(db, alias, body.target, who)
        _saved(request)
        view = registry.view()
        return AliasConfigPublic(
            name=alias,
            target=row.target,
            source="database",
            active=view.alias_sources.get(alias) == "database",
            description=describe(row.target, view),
            updated_at=row.updated_at,
        )

    return await run_in_threadpool(save)


@router.delete("/{alias}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model_alias_route(
    request: Request, db: DbSession, _: Admin, who: Who, alias: str = AliasName
) -> Response:
    """Delete a stored alias; the built-in or environment one of that name, if any, applies
    again. An alias only of the settings is 409 ``ALIAS_READ_ONLY``."""
    registry = api_state(request).models
    row = db.get(StoredAlias, alias)
    if row is None:
        if alias in registry.view().aliases:
            raise ConflictError(
                f"the alias '{alias}' is set by the server's settings (APPFORGE_MODELS or the "
                "built-in default), not stored: change it there, or store one of this name",
                code="ALIAS_READ_ONLY",
                details={"alias": alias},
            )
        raise NotFoundError(f"no model alias '{alias}'", code="ALIAS_NOT_FOUND")
    record(db, who, "model_alias.deleted", alias, {"target": row.target})
    db.delete(row)
    db.execute(catalog_changed())
    db.commit()
    _saved(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
