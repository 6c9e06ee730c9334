"""Use cases, prompts and their immutable versions: create, read, update, delete.

Functions take an open ``Session`` and leave committing to the caller (one
request is one transaction). Versions are checked before they are stored:
templates must parse in the sandbox, ``variables_schema`` must be a valid JSON
Schema, and ``model_defaults`` must be in range (see ``VersionSpec``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from jinja2 import TemplateSyntaxError
from jsonschema import Draft202012Validator, SchemaError
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appforge.core import sandbox as templating
from appforge.core.db import utcnow
from prompts import schemas
from prompts.errors import PromptsConflictError, PromptsInvalidError, PromptsNotFoundError
from prompts.tables import Prompt, PromptLabel, PromptVersion, UseCase

UUID_RE = re.compile(r"^[0-9a-fA-F-]{36}$")


# --- version specs ------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class ModelDefaults(_Strict):
    """Default model configuration; ranges as in the seed."""

    model: str | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    top_p: float | None = Field(default=None, ge=0, le=1)


class _Templates(_Strict):
    template_text: str | None = Field(default=None, max_length=200_000)
    template_messages: list[ChatMessage] | None = Field(default=None, min_length=1)

    def _check_form(self, kind: str) -> None:
        if kind == "text" and (self.template_text is None or self.template_messages is not None):
            raise ValueError("a text version needs template_text (and no template_messages)")
        if kind == "chat" and (self.template_messages is None or self.template_text is not None):
            raise ValueError("a chat version needs template_messages (and no template_text)")


class Variant(_Templates):
    """Templates used instead of the version's own for one provider (and model)."""

    model_provider: str = Field(min_length=1, max_length=100)
    model_name: str | None = Field(default=None, min_length=1, max_length=200)
    model_defaults: ModelDefaults | None = None


class VersionSpec(_Templates):
    """What a new version is made of (the body of ``POST .../versions``)."""

    type: Literal["text", "chat"]
    model_defaults: ModelDefaults = Field(default_factory=ModelDefaults)
    variables_schema: dict[str, Any] | None = None
    variants: list[Variant] = Field(default_factory=list, max_length=50)
    commit_message: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _forms(self) -> VersionSpec:
        self._check_form(self.type)
        seen: set[tuple[str, str | None]] = set()
        for variant in self.variants:
            variant._check_form(self.type)
            key = (variant.model_provider, variant.model_name)
            if key in seen:
                raise ValueError(f"two variants for {key[0]}/{key[1] or '*'}")
            seen.add(key)
        return self


def _template_fields(spec: _Templates, at: str) -> list[tuple[str, str]]:
    if spec.template_text is not None:
        return [(f"{at}template_text", spec.template_text)]
    return [
        (f"{at}template_messages[{i}].content", m.content)
        for i, m in enumerate(spec.template_messages or [])
    ]


def check_version(spec: VersionSpec) -> list[str]:
    """Validate templates and schema; return the variables the templates read, sorted.

    Raises ``PromptsInvalidError`` (VERSION_INVALID) listing every problem.
    """
    problems: list[dict[str, Any]] = []
    names: set[str] = set()
    fields = _template_fields(spec, "")
    for i, variant in enumerate(spec.variants):
        fields += _template_fields(variant, f"variants[{i}].")
    for path, template in fields:
        try:
            names |= templating.variables(template)
        except TemplateSyntaxError as exc:
            problems.append({"path": path, "line": exc.lineno, "message": exc.message or ""})
    code = "VERSION_INVALID"
    if spec.variables_schema is not None:
        try:
            Draft202012Validator.check_schema(spec.variables_schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(
                {"path": f"variables_schema{'/' + where if where else ''}", "message": exc.message}
            )
        else:
            refused = schemas.problems(spec.variables_schema)
            if refused and not problems:
                code = "SCHEMA_INVALID"  # only references or patterns we refuse
            problems += refused
    if problems:
        first = problems[0]
        raise PromptsInvalidError(
            f"{first['path']}: {first['message']}", code=code, details={"errors": problems}
        )
    return sorted(names)


# --- use cases ----------------------------------------------------------------


def get_use_case(db: Session, use_case_id: str) -> UseCase:
    row = db.get(UseCase, use_case_id)
    if row is None:
        raise PromptsNotFoundError(f"no use case '{use_case_id}'", code="USE_CASE_NOT_FOUND")
    return row


def create_use_case(db: Session, name: str, description: str) -> UseCase:
    if db.scalar(select(UseCase.id).where(UseCase.name == name)) is not None:
        raise PromptsConflictError(f"a use case named '{name}' exists", details={"name": name})
    now = utcnow()
    row = UseCase(
        id=str(uuid.uuid4()), name=name, description=description, created_at=now, updated_at=now
    )
    db.add(row)
    _flush(db, f"a use case named '{name}' exists")
    return row


def list_use_cases(db: Session, skip: int, limit: int) -> Sequence[UseCase]:
    query = select(UseCase).order_by(UseCase.created_at, UseCase.id)
    return db.scalars(query.offset(skip).limit(limit)).all()


def update_use_case(
    db: Session, row: UseCase, name: str | None, description: str | None
) -> UseCase:
    if name is not None and name != row.name:
        if db.scalar(select(UseCase.id).where(UseCase.name == name)) is not None:
            raise PromptsConflictError(f"a use case named '{name}' exists", details={"name": name})
        row.name = name
    if description is not None:
        row.description = description
    row.updated_at = utcnow()
    _flush(db, f"a use case named '{name}' exists")
    return row


# --- prompts ------------------------------------------------------------------


def _flush(db: Session, conflict: str) -> None:
    try:
        db.flush()
    except IntegrityError as exc:
        raise PromptsConflictError(conflict) from exc


def get_prompt(db: Session, prompt_id: str) -> Prompt:
    row = db.get(Prompt, prompt_id)
    if row is None:
        raise PromptsNotFoundError(f"no prompt '{prompt_id}'", details={"prompt_id": prompt_id})
    return row


def find_prompt(db: Session, ref: str) -> Prompt:
    """A prompt by id, or by name when the name is used in exactly one use case."""
    if UUID_RE.match(ref):
        row = db.get(Prompt, ref)
        if row is not None:
            return row
    rows = db.scalars(select(Prompt).where(Prompt.name == ref).limit(2)).all()
    if not rows:
        raise PromptsNotFoundError(f"no prompt '{ref}'", details={"prompt_id": ref})
    if len(rows) > 1:
        raise PromptsInvalidError(
            f"several use cases have a prompt named '{ref}': refer to it by id",
            code="PROMPT_AMBIGUOUS",
            details={"ref": ref},
        )
    return rows[0]


def create_prompt(
    db: Session,
    use_case: UseCase,
    name: str,
    description: str,
    tags: list[str],
    created_by: str | None,
) -> Prompt:
    _check_name_free(db, use_case.id, name)
    now = utcnow()
    row = Prompt(
        id=str(uuid.uuid4()),
        use_case_id=use_case.id,
        name=name,
        description=description,
        tags=_unique(tags),
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    db.add(row)
    _flush(db, f"use case '{use_case.id}' already has a prompt named '{name}'")
    return row


def _check_name_free(db: Session, use_case_id: str, name: str) -> None:
    taken = db.scalar(
        select(Prompt.id).where(Prompt.use_case_id == use_case_id, Prompt.name == name)
    )
    if taken is not None:
        raise PromptsConflictError(
            f"use case '{use_case_id}' already has a prompt named '{name}'",
            details={"name": name, "prompt_id": taken},
        )


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def update_prompt(
    db: Session,
    row: Prompt,
    name: str | None,
    description: str | None,
    tags: list[str] | None,
) -> Prompt:
    if name is not None and name != row.name:
        _check_name_free(db, row.use_case_id, name)
        row.name = name
    if description is not None:
        row.description = description
    if tags is not None:
        row.tags = _unique(tags)
    row.updated_at = utcnow()
    _flush(db, f"use case '{row.use_case_id}' already has a prompt named '{name}'")
    return row


def list_prompts(
    db: Session, use_case_id: str, tags: Sequence[str], skip: int, limit: int
) -> list[Prompt]:
    """Prompts of a use case, oldest first; with ``tags``, those having every tag."""
    rows = db.scalars(
        select(Prompt).where(Prompt.use_case_id == use_case_id).order_by(Prompt.created_at)
    ).all()
    wanted = set(tags)
    chosen = [r for r in rows if wanted <= set(r.tags or [])]
    return chosen[skip : skip + limit]


def lock_prompt(db: Session, prompt_id: str) -> Prompt:
    """Take the prompt's write lock first, so concurrent changes of it serialise.

    An UPDATE (not SELECT ... FOR UPDATE) so that SQLite, too, takes its write
    lock at the start of the transaction instead of failing on upgrade later.
    """
    done = db.execute(
        update(Prompt).where(Prompt.id == prompt_id).values(updated_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    if not done:
        raise PromptsNotFoundError(f"no prompt '{prompt_id}'", details={"prompt_id": prompt_id})
    db.expire_all()
    return get_prompt(db, prompt_id)


# --- versions -----------------------------------------------------------------


def create_version(
    db: Session, prompt_id: str, spec: VersionSpec, created_by: str | None
) -> PromptVersion:
    variables = check_version(spec)
    lock_prompt(db, prompt_id)
    last = db.scalar(
        select(func.max(PromptVersion.version_number)).where(PromptVersion.prompt_id == prompt_id)
    )
    dumped = spec.model_dump(mode="json", exclude_none=True)
    row = PromptVersion(
        id=str(uuid.uuid4()),
        prompt_id=prompt_id,
        version_number=(last or 0) + 1,
        type=spec.type,
        template_text=spec.template_text,
        template_messages=dumped.get("template_messages"),
        model_defaults=dumped.get("model_defaults", {}),
        variables_schema=spec.variables_schema,
        variants=dumped.get("variants", []),
        variables=variables,
        commit_message=spec.commit_message,
        created_by=created_by,
        created_at=utcnow(),
    )
    db.add(row)
    _flush(db, "another version was created at the same moment; retry")
    return row


def versions_of(db: Session, prompt_id: str) -> list[PromptVersion]:
    """Every version, newest first."""
    return list(
        db.scalars(
            select(PromptVersion)
            .where(PromptVersion.prompt_id == prompt_id)
            .order_by(PromptVersion.version_number.desc())
        )
    )


def get_version(db: Session, prompt_id: str, number: int) -> PromptVersion:
    row = db.scalar(
        select(PromptVersion).where(
            PromptVersion.prompt_id == prompt_id, PromptVersion.version_number == number
        )
    )
    if row is None:
        raise PromptsNotFoundError(
            f"prompt '{prompt_id}' has no version {number}",
            code="VERSION_NOT_FOUND",
            details={"prompt_id": prompt_id, "version": number},
        )
    return row


def latest_version(db: Session, prompt_id: str) -> PromptVersion | None:
    return db.scalar(
        select(PromptVersion)
        .where(PromptVersion.prompt_id == prompt_id)
        .order_by(PromptVersion.version_number.desc())
        .limit(1)
    )


def labels_by_version(db: Session, prompt_id: str) -> dict[str, list[str]]:
    """Version id -> its labels, sorted."""
    out: dict[str, list[str]] = {}
    rows = db.scalars(
        select(PromptLabel).where(PromptLabel.prompt_id == prompt_id).order_by(PromptLabel.label)
    )
    for row in rows:
        out.setdefault(row.version_id, []).append(row.label)
    return out
