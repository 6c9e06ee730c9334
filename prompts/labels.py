"""Labels are deployment environments: promote, demote, deploy, roll back.

A label points at one version of a prompt (``prompt_labels`` has the pair as
its primary key). Every move runs in the caller's transaction after taking the
prompt's write lock, so concurrent moves of one prompt's labels serialise:
each sees the one before it, and the history's ``previous_version`` chain is
exact. ``latest`` is reserved: it always means the newest version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from appforge.core.db import utcnow
from prompts.errors import PromptsInvalidError, PromptsNotFoundError
from prompts.store import get_version, latest_version, lock_prompt
from prompts.tables import PromptDeployment, PromptLabel, PromptVersion

LABEL_RE = re.compile(r"^[a-z0-9_.-]{1,36}$")
LATEST = "latest"


def check_label(label: str) -> str:
    if label == LATEST:
        raise PromptsInvalidError(
            "'latest' always means the newest version; it cannot be moved",
            code="LABEL_INVALID",
            details={"label": label},
        )
    if not LABEL_RE.match(label):
        raise PromptsInvalidError(
            "a label is 1-36 characters of a-z, 0-9, '_', '.', '-'",
            code="LABEL_INVALID",
            details={"label": label},
        )
    return label


def _current(db: Session, prompt_id: str, label: str) -> tuple[PromptLabel | None, int | None]:
    row = db.get(PromptLabel, (prompt_id, label))
    if row is None:
        return None, None
    version = db.get(PromptVersion, row.version_id)
    return row, version.version_number if version else None


def move(
    db: Session,
    prompt_id: str,
    label: str,
    number: int,
    actor: str | None,
    *,
    action: str = "promote",
    notes: str | None = None,
    evaluation_id: str | None = None,
) -> PromptDeployment:
    """Point ``label`` at version ``number`` (taking it off whichever version had it);
    ``evaluation_id`` names the evaluation a gated move passed."""
    check_label(label)
    lock_prompt(db, prompt_id)
    version = get_version(db, prompt_id, number)
    row, previous = _current(db, prompt_id, label)
    now = utcnow()
    if row is None:
        db.add(
            PromptLabel(
                prompt_id=prompt_id,
                label=label,
                version_id=version.id,
                updated_by=actor,
                updated_at=now,
            )
        )
    else:
        row.version_id = version.id
        row.updated_by = actor
        row.updated_at = now
    entry = PromptDeployment(
        prompt_id=prompt_id,
        label=label,
        action=action,
        version_number=number,
        previous_version=previous,
        actor=actor,
        notes=notes,
        evaluation_id=evaluation_id,
        created_at=now,
    )
    db.add(entry)
    db.flush()
    return entry


def remove(
    db: Session, prompt_id: str, label: str, number: int, actor: str | None
) -> PromptDeployment:
    """Take ``label`` off version ``number``; 404 LABEL_NOT_FOUND if it is not there."""
    check_label(label)
    lock_prompt(db, prompt_id)
    version = get_version(db, prompt_id, number)
    row = db.get(PromptLabel, (prompt_id, label))
    if row is None or row.version_id != version.id:
        raise PromptsNotFoundError(
            f"version {number} does not have the label '{label}'",
            code="LABEL_NOT_FOUND",
            details={"label": label, "version": number},
        )
    db.delete(row)
    entry = PromptDeployment(
        prompt_id=prompt_id,
        label=label,
        action="demote",
        version_number=None,
        previous_version=number,
        actor=actor,
        created_at=utcnow(),
    )
    db.add(entry)
    db.flush()
    return entry


def rollback(
    db: Session, prompt_id: str, label: str, actor: str | None, notes: str | None
) -> PromptDeployment:
    """Put ``label`` back where it was before its last move."""
    check_label(label)
    lock_prompt(db, prompt_id)
    last = db.scalar(
        select(PromptDeployment)
        .where(PromptDeployment.prompt_id == prompt_id, PromptDeployment.label == label)
        .order_by(PromptDeployment.id.desc())
        .limit(1)
    )
    if last is None or last.previous_version is None:
        raise PromptsNotFoundError(
            f"label '{label}' has no earlier version to roll back to",
            code="LABEL_NOT_FOUND",
            details={"label": label},
        )
    return move(db, prompt_id, label, last.previous_version, actor, action="rollback", notes=notes)


def history(db: Session, prompt_id: str) -> Sequence[PromptDeployment]:
    """Every move of every label of the prompt, oldest first."""
    return db.scalars(
        select(PromptDeployment)
        .where(PromptDeployment.prompt_id == prompt_id)
        .order_by(PromptDeployment.id)
    ).all()


def current(db: Session, prompt_id: str) -> list[tuple[PromptLabel, int]]:
    """Each label of the prompt with the version number it points at."""
    rows = db.execute(
        select(PromptLabel, PromptVersion.version_number)
        .join(PromptVersion, PromptVersion.id == PromptLabel.version_id)
        .where(PromptLabel.prompt_id == prompt_id)
        .order_by(PromptLabel.label)
    ).all()
    return [(label, number) for label, number in rows]


def resolve(
    db: Session, prompt_id: str, label: str | None = None, version: int | None = None
) -> tuple[PromptVersion, str | None]:
    """The version to use: by number, else by label; no label = production, else latest.

    Returns the version and the label it was found by (None when by number).
    """
    if version is not None:
        return get_version(db, prompt_id, version), None
    if label is None:
        row = db.get(PromptLabel, (prompt_id, "production"))
        if row is not None:
            found = db.get(PromptVersion, row.version_id)
            assert found is not None
            return found, "production"
        label = LATEST
    if label == LATEST:
        newest = latest_version(db, prompt_id)
        if newest is None:
            raise PromptsNotFoundError(
                f"prompt '{prompt_id}' has no versions yet",
                code="VERSION_NOT_FOUND",
                details={"prompt_id": prompt_id},
            )
        return newest, LATEST
    row = db.get(PromptLabel, (prompt_id, label))
    if row is None:
        raise PromptsNotFoundError(
            f"no version of prompt '{prompt_id}' has the label '{label}'",
            code="LABEL_NOT_FOUND",
            details={"prompt_id": prompt_id, "label": label},
        )
    found = db.get(PromptVersion, row.version_id)
    assert found is not None
    return found, label
