"""Datasets and their cases, on one database session (the caller commits).

A dataset is found by its id or its (unique) name. Every change to its cases
(add, import, replace, update, delete) raises its ``revision`` by one, in the
same transaction as the change, so an evaluation can name the revision it ran
on; a replace that changes nothing leaves it.
Bounds: cases per request and per dataset, bytes per case (``EvalSettings``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from appforge.core.db import utcnow
from appforge.core.settings import EvalSettings
from evals.casefiles import CaseData
from evals.errors import (
    CaseInvalidError,
    CaseNotFoundError,
    DatasetExistsError,
    DatasetNotFoundError,
    TooManyCasesError,
)
from evals.tables import Dataset, DatasetCase


@dataclass(frozen=True)
class CaseChange:
    """A case's new parts; None leaves a part as it is."""

    input: dict[str, Any] | None = None
    expected: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


def find_dataset(db: Session, ref: str) -> Dataset:
    """The dataset ``ref`` names, by id, else by name (``DATASET_NOT_FOUND``)."""
    row = db.get(Dataset, ref) if len(ref) <= 36 else None
    if row is None:
        row = db.scalar(select(Dataset).where(Dataset.name == ref))
    if row is None:
        raise DatasetNotFoundError(f"no dataset '{ref[:200]}'", details={"dataset": ref[:200]})
    return row


def _name_free(db: Session, name: str, but: str | None = None) -> None:
    taken = db.scalar(select(Dataset.id).where(Dataset.name == name))
    if taken is not None and taken != but:
        raise DatasetExistsError(
            f"a dataset named '{name}' exists", details={"name": name, "id": taken}
        )


def create_dataset(db: Session, name: str, description: str) -> Dataset:
    """A new, empty dataset at revision 1 (``DATASET_EXISTS`` if the name is taken)."""
    _name_free(db, name)
    now = utcnow()
    row = Dataset(
        id=str(uuid.uuid4()),
        name=name,
        description=description,
        revision=1,
        created_at=now,
        updated_at=now,
    )
    db.add(row)
    db.flush()
    return row


def update_dataset(
    db: Session, row: Dataset, name: str | None, description: str | None
) -> list[str]:
    """Rename or describe a dataset; the fields that changed."""
    changed = []
    if name is not None and name != row.name:
        _name_free(db, name, row.id)
        row.name = name
        changed.append("name")
    if description is not None and description != row.description:
        row.description = description
        changed.append("description")
    if changed:
        row.updated_at = utcnow()
        db.flush()
    return changed


def case_counts(db: Session, ids: Sequence[str]) -> dict[str, int]:
    """How many cases each of these datasets holds."""
    rows = db.execute(
        select(DatasetCase.dataset_id, func.count())
        .where(DatasetCase.dataset_id.in_(ids))
        .group_by(DatasetCase.dataset_id)
    ).all()
    counts = {dataset_id: int(n) for dataset_id, n in rows}
    return {i: counts.get(i, 0) for i in ids}


def _bump(db: Session, row: Dataset) -> None:
    """Raise the revision in the database (concurrent changes each count)."""
    db.execute(
        update(Dataset)
        .where(Dataset.id == row.id)
        .values(revision=Dataset.revision + 1, updated_at=utcnow())
    )
    db.refresh(row)


def _check_size(case: dict[str, Any], limits: EvalSettings, index: int | None) -> None:
    size = len(json.dumps(case, ensure_ascii=False, default=str).encode())
    if size > limits.max_case_bytes:
        where = f"case {index}" if index is not None else "the case"
        raise CaseInvalidError(
            f"{where} is {size} bytes as JSON, over {limits.max_case_bytes} "
            "(APPFORGE_EVALS__MAX_CASE_BYTES)",
            details={"index": index, "limit": limits.max_case_bytes},
        )


def _check_new(cases: Sequence[CaseData], limits: EvalSettings, held: int) -> None:
    """Refuse a change bringing ``cases`` to a dataset that keeps ``held`` others."""
    if len(cases) > limits.max_cases_per_request:
        raise TooManyCasesError(
            f"{len(cases)} cases in one request, over {limits.max_cases_per_request} "
            "(APPFORGE_EVALS__MAX_CASES_PER_REQUEST)",
            details={"limit": limits.max_cases_per_request},
        )
    if not cases:
        raise CaseInvalidError("no cases given")
    for index, case in enumerate(cases):
        _check_size(case.model_dump(), limits, index)
    if held + len(cases) > limits.max_cases_per_dataset:
        raise TooManyCasesError(
            f"the dataset would hold {held + len(cases)} cases, over "
            f"{limits.max_cases_per_dataset} (APPFORGE_EVALS__MAX_CASES_PER_DATASET)",
            details={"limit": limits.max_cases_per_dataset, "held": held},
        )


def _new_case(row: Dataset, n: int, case: CaseData) -> DatasetCase:
    now = utcnow()
    return DatasetCase(
        id=str(uuid.uuid4()),
        dataset_id=row.id,
        n=n,
        input=case.input,
        expected=case.expected,
        meta=case.metadata,
        created_at=now,
        updated_at=now,
    )


def add_cases(
    db: Session, row: Dataset, cases: Sequence[CaseData], limits: EvalSettings
) -> list[str]:
    """Append cases (in order) and raise the revision; their new ids."""
    _check_new(cases, limits, case_counts(db, [row.id])[row.id])
    last = db.scalar(select(func.max(DatasetCase.n)).where(DatasetCase.dataset_id == row.id))
    start = (last or 0) + 1
    made = [_new_case(row, start + i, case) for i, case in enumerate(cases)]
    db.add_all(made)
    db.flush()
    _bump(db, row)
    return [c.id for c in made]


def _input_key(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def replace_cases(
    db: Session, row: Dataset, cases: Sequence[CaseData], limits: EvalSettings
) -> tuple[list[str], bool]:
    """Make ``cases`` (in order) the dataset's only cases, as one change: the ids of its
    cases, and whether anything changed (the revision rose by one) or not (it stays).

    A case whose ``input`` an existing case has keeps that case's id (the first such,
    in order), so evaluations before and after compare it case by case."""
    _check_new(cases, limits, 0)
    old = list_cases(db, row)
    free: dict[str, list[DatasetCase]] = {}
    for stored in old:
        free.setdefault(_input_key(stored.input), []).append(stored)
    kept: list[DatasetCase] = []
    changed = False
    for n, case in enumerate(cases, start=1):
        same_input = free.get(_input_key(case.input))
        if not same_input:
            kept.append(_new_case(row, n, case))
            db.add(kept[-1])
            changed = True
            continue
        found = same_input.pop(0)
        if (found.n, found.expected, found.meta) != (n, case.expected, case.metadata):
            found.n, found.expected, found.meta = n, case.expected, case.metadata
            found.updated_at = utcnow()
            changed = True
        kept.append(found)
    for left in (c for cases_left in free.values() for c in cases_left):
        db.delete(left)
        changed = True
    db.flush()
    if changed:
        _bump(db, row)
    return [c.id for c in kept], changed


def list_cases(
    db: Session, row: Dataset, limit: int | None = None, offset: int = 0
) -> list[DatasetCase]:
    """The dataset's cases in order."""
    query = (
        select(DatasetCase)
        .where(DatasetCase.dataset_id == row.id)
        .order_by(DatasetCase.n, DatasetCase.created_at)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(db.scalars(query))


def get_case(db: Session, row: Dataset, case_id: str) -> DatasetCase:
    case = db.get(DatasetCase, case_id) if len(case_id) <= 36 else None
    if case is None or case.dataset_id != row.id:
        raise CaseNotFoundError(
            f"dataset '{row.name}' has no case '{case_id[:100]}'", details={"case": case_id[:100]}
        )
    return case


def update_case(
    db: Session, row: Dataset, case_id: str, change: CaseChange, limits: EvalSettings
) -> DatasetCase:
    """Replace the given parts of a case; the revision rises if anything changed."""
    case = get_case(db, row, case_id)
    new = CaseData(
        input=case.input if change.input is None else change.input,
        expected=case.expected if change.expected is None else change.expected,
        metadata=case.meta if change.metadata is None else change.metadata,
    )
    _check_size(new.model_dump(), limits, None)
    if (new.input, new.expected, new.metadata) != (case.input, case.expected, case.meta):
        case.input, case.expected, case.meta = new.input, new.expected, new.metadata
        case.updated_at = utcnow()
        db.flush()
        _bump(db, row)
    return case


def delete_case(db: Session, row: Dataset, case_id: str) -> None:
    db.delete(get_case(db, row, case_id))
    db.flush()
    _bump(db, row)


def case_data(case: DatasetCase) -> CaseData:
    return CaseData(input=case.input, expected=case.expected, metadata=case.meta)
