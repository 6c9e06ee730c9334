"""The client's types: mypy --strict on it and on pinned signatures; both clients alike."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from appforge.client import AsyncClient, Client, RunRecord, StreamChunk

ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE = {"close", "aclose"}


def operations(cls: type) -> dict[str, Callable[..., Any]]:
    """The public methods of a client that call the API."""
    return {
        name: fn
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in LIFECYCLE
    }


def test_client_passes_mypy_strict_with_its_pinned_signatures():
    """``client_typing.py`` pins result types and refused mistakes (unused ignores fail)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            # Its own cache: strict options would invalidate the project's default one.
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "strict-client"),
            "appforge/client",
            "tests/appforge/client_typing.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_client_and_async_client_have_the_same_operations():
    sync, aio = operations(Client), operations(AsyncClient)
    assert set(sync) == set(aio) and len(sync) == 108  # 107 operations and stream
    for name, fn in sync.items():
        assert inspect.signature(fn).parameters == inspect.signature(aio[name]).parameters, name
        assert inspect.getdoc(fn) == inspect.getdoc(aio[name]), name
        if name == "stream":
            assert inspect.isasyncgenfunction(aio[name])
        else:
            assert inspect.iscoroutinefunction(aio[name]), name


def _typed(hint: Any) -> bool:
    """A typed result: a model, a list of models, text, nothing, or a stream of chunks."""
    if hint in (str, type(None)):
        return True
    if isinstance(hint, type):
        return issubclass(hint, BaseModel)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return _typed(args[0]) and args[0] is not str
    return origin in (Iterator, AsyncIterator) and args == (StreamChunk,)


def test_client_operations_return_typed_results():
    for cls in (Client, AsyncClient):
        for name, fn in operations(cls).items():
            hint = typing.get_type_hints(fn)["return"]
            assert _typed(hint), f"{cls.__name__}.{name} returns {hint}"


def test_client_results_keep_fields_a_newer_server_adds():
    record = RunRecord.model_validate(
        {
            "id": "r",
            "app_uuid": "a",
            "app_version": 1,
            "session_id": "s",
            "status": "failed",
            "input": {},
            "output": {},
            "steps": [],
            "usage": {},
            "error": {"code": "TIMEOUT", "message": "too slow", "hint": "raise the limit"},
            "created_at": "2026-01-01T00:00:00Z",
            "cost_usd": 0.25,
        }
    )
    assert record.model_extra == {"cost_usd": 0.25}
    assert record.error is not None and record.error.code == "TIMEOUT"
    assert record.error.model_extra == {"hint": "raise the limit"}
