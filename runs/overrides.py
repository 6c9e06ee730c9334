"""A run of another definition of a stored app: an earlier version, other prompt
labels or versions, another model, other parameters (what evaluations compare).

:func:`variant` turns the stored app into the one to run: the document of
``app_version`` if given, then each llm step with the overrides applied. The
run is recorded with the version it ran. Overrides never change what is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session, sessionmaker

from apps_yaml.loader import load_text
from apps_yaml.schema import AppDocument, LlmParams, LlmStep, PromptRef
from prompts import store
from prompts.errors import PromptsError
from runs.errors import AppVersionNotFoundError
from runs.records import AppRecord, DocumentCache
from runs.tables import AppVersion


@dataclass(frozen=True)
class PromptPin:
    """Run a managed prompt at this label, or at this version (which wins)."""

    label: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class RunOverrides:
    """What a run changes of its app: ``prompts`` by prompt name or id."""

    prompts: Mapping[str, PromptPin] = field(default_factory=dict)
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.prompts or self.model or self.params)


def version_document(
    conn: Connection, app: AppRecord, version: int, cache: DocumentCache
) -> AppDocument:
    doc = cache.get((app.uuid, version))
    if doc is not None:
        return doc
    text = conn.scalar(
        select(AppVersion.yaml).where(
            AppVersion.app_uuid == app.uuid, AppVersion.version == version
        )
    )
    if text is None:
        raise AppVersionNotFoundError(
            f"app '{app.uuid}' has no version {version}", details={"app_version": version}
        )
    doc = load_text(text, references=None)
    cache.put((app.uuid, version), doc)
    return doc


def _prompt_id(db: Session, ref: str, known: dict[str, str | None]) -> str | None:
    if ref not in known:
        try:
            known[ref] = store.find_prompt(db, ref).id
        except PromptsError:
            known[ref] = None
    return known[ref]


def _overridden(doc: AppDocument, overrides: RunOverrides, db: Session) -> AppDocument:
    known: dict[str, str | None] = {}
    pins = {_prompt_id(db, ref, known) or ref: pin for ref, pin in overrides.prompts.items()}
    doc = doc.model_copy(deep=True)
    for step in doc.steps:
        if not isinstance(step, LlmStep):
            continue
        if overrides.model:
            step.model = overrides.model
        if overrides.params:
            merged = {**step.params.model_dump(exclude_none=True), **overrides.params}
            step.params = LlmParams.model_validate(merged)
        if isinstance(step.prompt, PromptRef):
            pin = pins.get(_prompt_id(db, step.prompt.ref, known) or step.prompt.ref)
            if pin is not None:
                label = pin.label or step.prompt.label
                step.prompt = step.prompt.model_copy(
                    update={"label": label, "version": pin.version}
                )
    return doc


def variant(
    conn: Connection,
    app: AppRecord,
    version: int | None,
    overrides: RunOverrides | None,
    factory: sessionmaker[Session],
    cache: DocumentCache,
) -> AppRecord:
    """The app to run: ``version``'s document (``APP_VERSION_NOT_FOUND``), overridden."""
    doc = app.document
    if version is not None and version != app.version:
        doc = version_document(conn, app, version, cache)
    if overrides:
        with factory() as db:
            doc = _overridden(doc, overrides, db)
    return replace(app, version=version or app.version, document=doc)
