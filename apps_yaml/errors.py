"""Errors of the app language.

Every one derives from the root ``appforge.core.errors.AppforgeError``.

AppsYamlError                  base: carries ``code``, ``status_code``, ``details``
├── AppDocumentError           422: the document is not a valid app
│   codes: YAML_INVALID (syntax), YAML_TOO_COMPLEX (alias bomb, too deep),
│          APP_INVALID (schema, references, templates)
├── AppTooLargeError           413 YAML_TOO_LARGE: more bytes than the limit
├── InputInvalidError          422 INPUT_INVALID: a run's input does not fit the app's inputs
└── RunFailedError             a step failed while running (code from the cause)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from appforge.core.errors import AppforgeError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (path and YAML line) and what."""

    path: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AppsYamlError(AppforgeError):
    code = "APP_ERROR"
    status_code = 400


class AppDocumentError(AppsYamlError):
    code = "APP_INVALID"
    status_code = 422

    def __init__(self, problems: list[Problem], *, code: str | None = None) -> None:
        self.problems = problems
        first = problems[0]
        where = f"line {first.line}, " if first.line else ""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(
            f"{where}{first.path or 'document'}: {first.message}{more}",
            code=code,
            details={"errors": [p.as_dict() for p in problems]},
        )


class AppTooLargeError(AppsYamlError):
    code = "YAML_TOO_LARGE"
    status_code = 413


class InputInvalidError(AppsYamlError):
    code = "INPUT_INVALID"
    status_code = 422


class RunFailedError(AppsYamlError):
    code = "RUN_FAILED"
    status_code = 500
