"""Cases as files: JSONL (one case object a line) and CSV, read and written.

A JSONL line is ``{"input": {...}, "expected": {...}, "metadata": {...}}``
(``expected`` and ``metadata`` optional; an ``id``, as exports carry, is
ignored). A CSV file has a header row; its columns are ``input``,
``expected`` and ``metadata`` holding JSON objects, and/or ``input.<key>``,
``expected.<key>`` and ``metadata.<key>`` holding one text value each (an
empty cell leaves the key out); an ``id`` column is ignored. Exports write
JSONL lines with the case's ``id``, and CSV with the columns ``id``,
``input``, ``expected`` and ``metadata`` as JSON.

Every problem is ``CASE_FILE_INVALID`` naming its line; nothing is stored from a
file that has one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appforge.core.values import find_unstorable
from evals.errors import CaseInvalidError, TooManyCasesError

PARTS = ("input", "expected", "metadata")


class CaseData(BaseModel):
    """A case as given: the app's input, the expected output keys, free metadata."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(description="Values of the app's inputs.")
    expected: dict[str, Any] = Field(
        default_factory=dict, description="The expected value of each scored output key."
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free data for people.")


def _invalid(line: int, message: str) -> CaseInvalidError:
    return CaseInvalidError(
        f"line {line}: {message}", code="CASE_FILE_INVALID", details={"line": line}
    )


def _case(line: int, data: Any) -> CaseData:
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "id"}
    try:
        case = CaseData.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the case"
        raise _invalid(line, f"{where}: {first['msg']}") from None
    # No JSON check saw a file's values: refuse what no database can keep (NUL, ...).
    found = find_unstorable(case.model_dump())
    if found is not None:
        where = ".".join(str(p) for p in found.path)
        raise _invalid(line, f"{where}: the value {found.reason}")
    return case


def _count(n: int, limit: int) -> None:
    if n > limit:
        raise TooManyCasesError(
            f"the file holds more than {limit} cases (APPFORGE_EVALS__MAX_CASES_PER_REQUEST)",
            details={"limit": limit},
        )


def read_jsonl(text: str, limit: int) -> list[CaseData]:
    """The cases of a JSONL text (blank lines skipped)."""
    cases: list[CaseData] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        _count(len(cases) + 1, limit)
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _invalid(number, f"not JSON ({exc.msg})") from None
        cases.append(_case(number, data))
    return cases


def _cell(line: int, column: str, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise _invalid(line, f"column '{column}' is not a JSON object") from None


def _csv_row(line: int, row: dict[str, str]) -> CaseData:
    parts: dict[str, dict[str, Any]] = {p: {} for p in PARTS}
    for column, value in row.items():
        if column == "id" or value in (None, ""):
            continue
        if column in PARTS:
            whole = _cell(line, column, value)
            if not isinstance(whole, dict):
                raise _invalid(line, f"column '{column}' is not a JSON object")
            parts[column].update(whole)
        else:
            part, _, key = column.partition(".")
            parts[part][key] = value
    return _case(line, parts)


def read_csv(text: str, limit: int) -> list[CaseData]:
    """The cases of a CSV text with a header row (see the module's docstring)."""
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="")
    for column in reader.fieldnames or []:
        part, dot, key = column.partition(".")
        if not (column == "id" or column in PARTS or (part in PARTS and dot and key)):
            raise _invalid(
                1,
                f"unknown column '{column}' (input, expected, metadata, "
                "input.<key>, expected.<key>, metadata.<key> or id)",
            )
    if not reader.fieldnames or not any(c.split(".")[0] == "input" for c in reader.fieldnames):
        raise _invalid(1, "the header row has no 'input' or 'input.<key>' column")
    cases: list[CaseData] = []
    try:
        for row in reader:
            if "" in row:
                raise _invalid(reader.line_num, "more cells than columns")
            _count(len(cases) + 1, limit)
            cases.append(_csv_row(reader.line_num, row))
    except csv.Error as exc:
        raise _invalid(reader.line_num, f"not CSV ({exc})") from None
    return cases


def write_jsonl(cases: Iterable[tuple[str, CaseData]]) -> str:
    """Cases as JSONL, each line with its ``id``."""
    return "".join(
        json.dumps({"id": case_id, **case.model_dump()}, ensure_ascii=False) + "\n"
        for case_id, case in cases
    )


def write_csv(cases: Iterable[tuple[str, CaseData]]) -> str:
    """Cases as CSV: ``id`` and the three parts as JSON."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["id", *PARTS])
    for case_id, case in cases:
        data = case.model_dump()
        writer.writerow([case_id, *(json.dumps(data[p], ensure_ascii=False) for p in PARTS)])
    return out.getvalue()
