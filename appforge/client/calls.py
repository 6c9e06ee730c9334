"""How an operation is written once for both clients.

An operation is a generator, ``Op[T]``: it yields the :class:`Call` it needs,
receives the ``httpx.Response``, and returns its typed result (an operation that
polls also yields :class:`Sleep`). ``Client`` drives it with blocking I/O and
``AsyncClient`` with awaits; each of their methods is one line that hands its
operation to ``_drive``. A call declares its part in the prompt cache itself
(``prompt_cache``), so the drivers apply one policy to every operation.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import yaml
from pydantic import BaseModel

from appforge.client.upload import MultipartBody

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# "read": the answer is kept and served while fresh, and stale if the server is down;
# "write": a prompt changed, so no kept answer is fresh any more.
CacheRole = Literal["read", "write"]

# An app definition: a YAML file, YAML text, or the document as a mapping.
AppSource = str | Path | Mapping[str, Any]


@dataclass
class Call:
    """One HTTP request of an operation."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    upload: MultipartBody | None = None  # a body sent in pieces (a file upload)
    headers: dict[str, str] = field(default_factory=dict)
    prompt_cache: CacheRole | None = None

    def body(self) -> bytes:
        if self.content is not None:
            return self.content
        if self.json is not None:
            return json.dumps(self.json, separators=(",", ":")).encode()
        return b""

    def cache_key(self) -> str:
        """The same request gives the same key, whatever the order of its JSON keys."""
        request = [self.method, self.path, self.params, self.json]
        return json.dumps(request, sort_keys=True, default=str)


@dataclass
class Sleep:
    """An operation that polls asks its driver to wait (without blocking an event loop)."""

    seconds: float


Op = Generator[Call | Sleep, httpx.Response, T]


class SyncDriven(ABC):
    """Base of the method groups of ``Client``: each method drives one operation."""

    @abstractmethod
    def _drive(self, op: Op[T]) -> T:
        """Run the operation to its result, making its calls."""


class AsyncDriven(ABC):
    """Base of the method groups of ``AsyncClient``: each method awaits one operation."""

    @abstractmethod
    async def _drive(self, op: Op[T]) -> T:
        """Run the operation to its result, awaiting its calls."""


# --- building calls and reading answers -------------------------------------------------

YAML_TYPE = {"Content-Type": "application/yaml"}
YAML_ACCEPT = {"Accept": "application/yaml"}


def definition(app: AppSource) -> bytes:
    """A YAML file path, YAML text, or a mapping as the body of an app request."""
    if isinstance(app, Path):
        return app.read_bytes()
    if isinstance(app, Mapping):
        text = yaml.safe_dump(dict(app), sort_keys=False, allow_unicode=True)
        return text.encode()
    return app.encode()


def given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None (PATCH bodies: absent means unchanged)."""
    return {k: v for k, v in fields.items() if v is not None}


def window(start: datetime | None, end: datetime | None, bucket: str) -> dict[str, Any]:
    """Analytics query parameters (the API calls the bounds ``since`` and ``until``)."""
    return {"bucket": bucket, **time_range(start, end)}


def time_range(start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """A time range's query parameters, ``since`` (included) and ``until`` (excluded)."""
    params: dict[str, Any] = {}
    if start is not None:
        params["since"] = start.isoformat()
    if end is not None:
        params["until"] = end.isoformat()
    return params


def one(model: type[M], response: httpx.Response) -> M:
    """The answer as one ``model``."""
    return model.model_validate(response.json())


def many(model: type[M], response: httpx.Response) -> list[M]:
    """The answer, a JSON list, as ``model`` items."""
    return [model.model_validate(item) for item in response.json()]
