"""The one error root: every error appforge raises on purpose derives from it.

Each package keeps its own base (for ``except`` clauses that mean "this
package refused") and its specific errors, but all of them carry the same four
things, so the API renders any of them as the one error body, and the run
service records any of them as a run's failure, without knowing the package::

    AppforgeError                  code, status_code, message, details, headers
    ├── ApiError                   api/errors.py: auth, not found, conflicts, limits
    ├── AppsYamlError              apps_yaml/errors.py: documents, inputs, failed steps
    ├── DatasourceError            datasources/errors.py: entries, filters, fetching
    ├── EvalsError                 evals/errors.py: datasets, cases, scorers, evaluations
    ├── PromptsError               prompts/errors.py: use cases, prompts, versions, labels
    ├── ProviderError              providers/errors.py: model backends
    ├── StorageFullError           507 STORAGE_FULL: a write found the disk full
    └── StorageReadOnlyError       503 STORAGE_READ_ONLY: a write found storage read-only

``code`` is UPPER_SNAKE and documented; ``status_code`` is the HTTP status the
API answers with; ``details`` is JSON data for the client; ``headers`` are
extra HTTP headers (``Retry-After``, ``WWW-Authenticate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AppforgeError(Exception):
    """Base of every error raised on purpose; subclasses set ``code`` and ``status_code``."""

    code: str = "ERROR"
    status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details: dict[str, Any] = dict(details) if details else {}
        self.headers: dict[str, str] = dict(headers) if headers else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class StorageFullError(AppforgeError):
    """A write found the disk full (``appforge.core.db.storage_full`` tells which errors
    say so); what it was part of is not stored."""

    code = "STORAGE_FULL"
    status_code = 507

    def __init__(self) -> None:
        super().__init__(
            "the server's storage is full: nothing was stored; retry once space is freed"
        )


class StorageReadOnlyError(AppforgeError):
    """A write found the storage read-only: the home's file system (remounted read-only
    after disk errors, say) or the database (a PostgreSQL standby after a failover);
    ``appforge.core.db.read_only`` tells which errors say so. Nothing is stored."""

    code = "STORAGE_READ_ONLY"
    status_code = 503

    def __init__(self) -> None:
        super().__init__(
            "the server's storage is read-only: nothing was stored; "
            "retry once an operator has made it writable",
            headers={"Retry-After": "30"},
        )
