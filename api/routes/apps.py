"""Apps: create and update from YAML, read as JSON or YAML, numbered versions."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.access import AppLister, AppReader, AppWriter, Reader, Writer
from api.audit import record
from api.auth import Principal
from api.deps import DbSession, Who
from api.errors import ApiError, ConflictError, NotFoundError, UnsupportedMediaError
from api.gating import Candidate, Requirement, run_gate
from api.routes.webhooks import emit
from api.state import State, api_state
from appforge.core.db import utcnow
from apps_yaml.loader import load_text
from apps_yaml.schema import AppDocument
from datasources.tables import Datasource
from providers.errors import ProviderError
from runs import prompt_refs
from runs.records import stored_document
from runs.tables import App, AppVersion

router = APIRouter(prefix="/api/apps", tags=["apps"])

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}
# The body is required (an empty one is 422 APP_INVALID), but not marked so:
# openapi-python-client (0.29) generates code that does not import for a
# required body with two media types (its issue #1451).
_YAML_BODY = {
    "requestBody": {
        "description": "The app definition (required): YAML, or the same document as JSON.",
        "content": {
            "application/yaml": {
                "schema": {"type": "string", "format": "binary", "description": "The app as YAML"}
            },
            "application/json": {"schema": {"type": "object", "description": "The app as JSON"}},
        },
    }
}


class AppPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    uuid: str
    name: str
    description: str
    type: str
    public: bool
    version: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    definition: dict[str, Any]


class AppVersionPublic(BaseModel):
    version: int
    created_at: datetime
    created_by: str | None
    current: bool
    evaluation_id: str | None = None  # the evaluation a gated restore passed


class AppVersionDetail(AppVersionPublic):
    yaml: str
    definition: dict[str, Any]


def to_public(app: App) -> AppPublic:
    return AppPublic.model_validate(
        {
            **{c: getattr(app, c) for c in AppPublic.model_fields if c != "definition"},
            "definition": app.document,
        }
    )


def wants_yaml(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(t in accept for t in ("application/yaml", "application/x-yaml", "text/yaml"))


async def definition_text(request: Request) -> str:
    """The app definition from the body: YAML as sent, or JSON turned into YAML."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError("the body is not UTF-8 text", code="BODY_INVALID") from exc
    if media in YAML_TYPES:
        return text
    if media == "application/json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiError(
                f"the body is not valid JSON: {exc.msg} at line {exc.lineno}",
                code="BODY_INVALID",
            ) from exc
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    raise UnsupportedMediaError(
        "send the app definition with Content-Type: application/yaml (or application/json)",
        details={"content_type": media or None},
    )


DefinitionText = Annotated[str, Depends(definition_text)]


class StoreReferences:
    """What an app may refer to, as stored now: datasources, prompts and models."""

    def __init__(self, request: Request, db: Session) -> None:
        self.request = request
        self.db = db

    def datasource_exists(self, name_or_uuid: str) -> bool:
        return (
            self.db.scalar(
                select(Datasource.uuid).where(
                    or_(Datasource.uuid == name_or_uuid, Datasource.name == name_or_uuid)
                )
            )
            is not None
        )

    def prompt_exists(self, ref: str, label: str, version: int | None = None) -> bool:
        return prompt_refs.prompt_exists(self.db, ref, label, version)

    def model_problem(self, model: str) -> str | None:
        try:
            api_state(self.request).models.check(model)
        except ProviderError as exc:
            return exc.message
        return None

    def flow_served(self, name: str) -> bool:
        return name in api_state(self.request).services.flows


def parse_definition(request: Request, db: Session, text: str) -> AppDocument:
    """Validate a definition completely, as it would run: 422 with every problem."""
    limits = api_state(request).settings.limits
    return load_text(
        text,
        max_bytes=limits.max_yaml_bytes,
        max_nodes=limits.max_yaml_nodes,
        references=StoreReferences(request, db),
    )


def get_app_row(db: Session, app_uuid: str) -> App:
    app = db.get(App, app_uuid)
    if app is None:
        raise NotFoundError(f"no app '{app_uuid}'", code="APP_NOT_FOUND")
    return app


def _apply(app: App, doc: AppDocument, text: str) -> None:
    app.name = doc.name
    app.description = doc.description
    app.type = doc.type
    app.public = doc.public
    app.yaml = text
    app.document = stored_document(doc)
    app.updated_at = utcnow()


def _lock_app_row(db: Session, app: App) -> None:
    """Reload the app's row, locked until commit, before numbering its next version.

    On PostgreSQL concurrent saves of one app wait here for each other, so each
    gets the next version. SQLite locks the whole database at the first write
    instead; a save that read an older version then collides on the version
    number, which :func:`_next_version` turns into a 409.
    """
    db.refresh(app, with_for_update=True)


def _next_version(
    db: Session, app: App, token: Principal, evaluation_id: str | None = None
) -> None:
    """Number and write the app's next version now; a concurrent save that took the
    number first is a 409 (nothing of this save is stored)."""
    app.version += 1
    _new_version(db, app, token, evaluation_id)
    try:
        db.flush()
    except IntegrityError as exc:
        db.rollback()
        raise ConflictError(
            f"app '{app.uuid}' was saved by someone else at the same time: load it and save again",
            code="APP_VERSION_CONFLICT",
            details={"app_uuid": app.uuid},
        ) from exc


def _new_version(db: Session, app: App, token: Principal, evaluation_id: str | None = None) -> None:
    db.add(
        AppVersion(
            app_uuid=app.uuid,
            version=app.version,
            yaml=app.yaml,
            created_by=token.name,
            created_at=app.updated_at,
            evaluation_id=evaluation_id,
        )
    )


@router.post(
    "",
    response_model=AppPublic,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_YAML_BODY,
)
def create_app_route(
    request: Request, text: DefinitionText, db: DbSession, token: Writer, who: Who
) -> AppPublic:
    """Create an app from its YAML definition (``Content-Type: application/yaml``)."""
    doc = parse_definition(request, db, text)
    now = utcnow()
    app = App(uuid=str(uuid.uuid4()), version=1, created_by=token.name, created_at=now)
    _apply(app, doc, text)
    app.updated_at = now
    db.add(app)
    _new_version(db, app, token)
    record(db, who, "app.created", app.uuid, _audit_details(app))
    db.commit()
    return to_public(app)


class AppCheck(BaseModel):
    """A definition that passed every save-time check (nothing was stored)."""

    valid: bool
    name: str
    type: str
    public: bool


@router.post("/validate", response_model=AppCheck, openapi_extra=_YAML_BODY)
def validate_app_route(
    request: Request, text: DefinitionText, db: DbSession, _: Reader
) -> AppCheck:
    """Check a YAML definition exactly as a create or save would, storing nothing:
    200 if it is valid, else 422 ``APP_INVALID`` with each problem at its line."""
    doc = parse_definition(request, db, text)
    return AppCheck(valid=True, name=doc.name, type=doc.type, public=doc.public)


@router.get("", response_model=list[AppPublic])
def list_apps_route(
    db: DbSession,
    token: AppLister,
    response: Response,
    q: Annotated[str | None, Query(max_length=200, description="Search name/description")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AppPublic]:
    """List apps, newest first; ``X-Total-Count`` gives the number before paging.
    A token narrowed to apps lists only those."""
    query = select(App)
    if token.apps is not None:
        query = query.where(App.uuid.in_(sorted(token.apps)))
    if q:
        like = f"%{q.lower()}%"
        query = query.where(
            or_(func.lower(App.name).like(like), func.lower(App.description).like(like))
        )
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.scalars(query.order_by(App.created_at.desc()).limit(limit).offset(offset))
    response.headers["X-Total-Count"] = str(total)
    return [to_public(a) for a in rows]


@router.get(
    "/{app_uuid}",
    response_model=AppPublic,
    responses={200: {"content": {"application/yaml": {"schema": {"type": "string"}}}}},
)
def get_app_route(request: Request, app_uuid: str, db: DbSession, _: AppReader) -> Any:
    """One app as JSON, or its YAML as stored when the client sends ``Accept: application/yaml``."""
    app = get_app_row(db, app_uuid)
    if wants_yaml(request):
        return PlainTextResponse(app.yaml, media_type="application/yaml")
    return to_public(app)


def _audit_details(app: App, **extra: Any) -> dict[str, Any]:
    """An audit event's details about an app."""
    return {"name": app.name, "version": app.version, **extra}


def _event_data(app: App, token: Principal, **extra: Any) -> dict[str, Any]:
    """A webhook payload's ``data`` about an app."""
    data = {"appId": app.uuid, "appName": app.name, "version": app.version, "by": token.name}
    return {**data, **extra}


@router.patch("/{app_uuid}", response_model=AppPublic, openapi_extra=_YAML_BODY)
def update_app_route(
    request: Request,
    app_uuid: str,
    text: DefinitionText,
    db: DbSession,
    token: AppWriter,
    who: Who,
) -> AppPublic:
    """Replace an app's definition with new YAML; the old one stays as a numbered version."""
    app = get_app_row(db, app_uuid)
    doc = parse_definition(request, db, text)
    _lock_app_row(db, app)
    if text == app.yaml:
        return to_public(app)
    _apply(app, doc, text)
    _next_version(db, app, token)
    emit(db, "app.updated", _event_data(app, token))
    record(db, who, "app.updated", app.uuid, _audit_details(app))
    db.commit()
    return to_public(app)


@router.delete("/{app_uuid}", status_code=status.HTTP_204_NO_CONTENT)
def delete_app_route(app_uuid: str, db: DbSession, _: AppWriter, who: Who) -> None:
    """Delete an app with its versions, sessions and runs."""
    app = get_app_row(db, app_uuid)
    record(db, who, "app.deleted", app.uuid, _audit_details(app))
    db.delete(app)
    db.commit()


@router.get("/{app_uuid}/versions", response_model=list[AppVersionPublic])
def list_app_versions_route(app_uuid: str, db: DbSession, _: AppReader) -> list[AppVersionPublic]:
    """Every definition the app has had, newest first."""
    app = get_app_row(db, app_uuid)
    rows = db.scalars(
        select(AppVersion)
        .where(AppVersion.app_uuid == app_uuid)
        .order_by(AppVersion.version.desc())
    )
    return [
        AppVersionPublic(
            version=v.version,
            created_at=v.created_at,
            created_by=v.created_by,
            current=v.version == app.version,
            evaluation_id=v.evaluation_id,
        )
        for v in rows
    ]


def _version_row(db: Session, app_uuid: str, version: int) -> AppVersion:
    row = db.scalar(
        select(AppVersion).where(AppVersion.app_uuid == app_uuid, AppVersion.version == version)
    )
    if row is None:
        raise NotFoundError(
            f"app '{app_uuid}' has no version {version}", code="APP_VERSION_NOT_FOUND"
        )
    return row


@router.get(
    "/{app_uuid}/versions/{version}",
    response_model=AppVersionDetail,
    responses={200: {"content": {"application/yaml": {"schema": {"type": "string"}}}}},
)
def get_app_version_route(
    request: Request, app_uuid: str, version: int, db: DbSession, _: AppReader
) -> Any:
    """One earlier definition, as JSON or (``Accept: application/yaml``) YAML."""
    app = get_app_row(db, app_uuid)
    row = _version_row(db, app_uuid, version)
    if wants_yaml(request):
        return PlainTextResponse(row.yaml, media_type="application/yaml")
    return AppVersionDetail(
        version=row.version,
        created_at=row.created_at,
        created_by=row.created_by,
        current=row.version == app.version,
        yaml=row.yaml,
        definition=yaml.safe_load(row.yaml),
    )


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require: Requirement | None = Field(
        default=None,
        description="Restore only if this evaluation of the app at that version passes "
        "(409 EVALUATION_FAILED); default: the app's stored policy.",
    )


@router.post("/{app_uuid}/versions/{version}/restore", response_model=AppPublic)
def restore_app_version_route(
    request: Request,
    app_uuid: str,
    version: int,
    db: DbSession,
    token: AppWriter,
    who: Who,
    state: State,
    body: RestoreBody | None = None,
) -> AppPublic:
    """Make an earlier definition current again, as a new version (validated as on save).
    With ``require`` (or the app's stored policy), only if an evaluation of the app at
    that version passes (409 ``EVALUATION_FAILED`` naming it otherwise)."""
    app = get_app_row(db, app_uuid)
    row = _version_row(db, app_uuid, version)
    doc = parse_definition(request, db, row.yaml)
    if row.yaml == app.yaml:
        return to_public(app)
    require = None if body is None else body.require
    evaluation_id = run_gate(db, state, token, require, Candidate("app", app.uuid, version))
    app = get_app_row(db, app_uuid)
    _lock_app_row(db, app)
    if row.yaml == app.yaml:
        return to_public(app)
    _apply(app, doc, row.yaml)
    _next_version(db, app, token, evaluation_id)
    emit(db, "app.updated", _event_data(app, token, restoredFrom=version))
    gated = {} if evaluation_id is None else {"evaluation_id": evaluation_id}
    record(db, who, "app.restored", app.uuid, _audit_details(app, restored_from=version, **gated))
    db.commit()
    return to_public(app)
    _apply(app, doc, row.yaml)
    _next_version(db, app, token)
    emit(db, "app.updated", _event_data(app, token, restoredFrom=version))
    record(db, who, "app.restored", app.uuid, _audit_details(app, restored_from=version))
    db.commit()
    return to_public(app)
