"""The one error body, and the handlers that turn every exception into it.

Every 4xx/5xx answer is::

    {"error": {"code": "APP_NOT_FOUND", "message": "...", "details": {...}},
     "request_id": "..."}

Exceptions of the API layer (all under ``appforge.core.errors.AppforgeError``):

    ApiError                     base: ``code``, ``status_code``, ``details``, ``headers``
    ├── NotFoundError            404 (APP_NOT_FOUND, RUN_NOT_FOUND, SESSION_NOT_FOUND, ...)
    ├── AuthError                401 (AUTH_REQUIRED, TOKEN_INVALID, AUTH_INVALID)
    ├── ForbiddenError           403 (FORBIDDEN, APP_FORBIDDEN, ORIGIN_FORBIDDEN)
    ├── ConflictError            409 CONFLICT
    ├── PayloadTooLargeError     413 PAYLOAD_TOO_LARGE
    ├── UnsupportedMediaError    415 UNSUPPORTED_MEDIA_TYPE
    └── NotReadyError            503 NOT_READY (readiness: a backend does not answer)

The database being away (PostgreSQL down or restarting, SQLite locked) is 503
``DATABASE_UNAVAILABLE`` with ``Retry-After``, logged once in a while without a
traceback. A write that finds the disk full (no space left, SQLite's "database or
disk is full", PostgreSQL's disk_full) is 507 ``STORAGE_FULL``, with nothing
stored; any other unexpected exception is 500 ``INTERNAL_ERROR``.

On the OpenAI-compatible paths (``/v1/...``) the same errors, with the same
status codes, take OpenAI's shape instead (``api.openai_format.error_body``)::

    {"error": {"message": "...", "type": "not_found_error", "code": "APP_NOT_FOUND",
               "param": null}}

Errors of the packages below (``apps_yaml``, ``datasources``, ``prompts``, ``providers``)
derive from the same root and are rendered by the same handler.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import openai_format
from appforge.core.db import read_only, storage_full, timed_out, unavailable
from appforge.core.errors import AppforgeError, StorageFullError, StorageReadOnlyError

log = logging.getLogger(__name__)


class ApiError(AppforgeError):
    code = "BAD_REQUEST"
    status_code = 400


class NotFoundError(ApiError):
    code = "NOT_FOUND"
    status_code = 404


class AuthError(ApiError):
    code = "AUTH_REQUIRED"
    status_code = 401


class ForbiddenError(ApiError):
    code = "FORBIDDEN"
    status_code = 403


class ConflictError(ApiError):
    code = "CONFLICT"
    status_code = 409


class PayloadTooLargeError(ApiError):
    code = "PAYLOAD_TOO_LARGE"
    status_code = 413


class UnsupportedMediaError(ApiError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    status_code = 415


class NotReadyError(ApiError):
    code = "NOT_READY"
    status_code = 503


class ErrorDetail(BaseModel):
    code: str = Field(description="UPPER_SNAKE error code (see the README)")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail
    request_id: str


_DESCRIPTIONS = {
    400: "Bad request",
    401: "No token, an unknown or revoked one, or a bad signature",
    403: "The token may not do this",
    404: "No such object or route",
    409: "Conflict with what is stored",
    413: "Body too large",
    415: "Unsupported body type",
    422: "The body, a parameter or the input does not validate",
    429: "Rate limited or too many active runs (see Retry-After)",
    500: "Internal error",
    502: "The model backend failed",
    503: "The model backend is unavailable",
    504: "The run took too long",
}

# Documented on every route: each may answer any of these with the error body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _DESCRIPTIONS.items()
}

# The same statuses on the OpenAI-compatible routes, in OpenAI's shape.
OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": openai_format.OpenAIErrorBody, "description": text}
    for status, text in _DESCRIPTIONS.items()
}

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "AUTH_REQUIRED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def error_body(code: str, message: str, details: Any, request_id: str) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "details": details or {}},
        "request_id": request_id,
    }


def is_openai_path(path: str) -> bool:
    """Whether ``path`` is on the OpenAI-compatible surface (errors in OpenAI's shape)."""
    return path == "/v1" or path.startswith("/v1/")


def body_for(
    path: str, status: int, code: str, message: str, details: Any, request_id: str
) -> dict[str, Any]:
    """The error body for a request to ``path``: ours, or OpenAI's on ``/v1``."""
    if is_openai_path(path):
        return openai_format.error_body(status, code, message, _param(details))
    return error_body(code, message, details, request_id)


def _param(details: Any) -> str | None:
    """The body field a validation error is about (OpenAI's ``param``), if one is."""
    errors = details.get("errors") if isinstance(details, dict) else None
    if not errors or not isinstance(errors, list) or not isinstance(errors[0], dict):
        return None
    loc = [str(part) for part in errors[0].get("loc", [])]
    if len(loc) < 2 or loc[0] != "body":
        return None
    return ".".join(loc[1:])


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id_of(request)
    body = body_for(request.url.path, status, code, message, details, request_id)
    # Set here too: a 500 leaves through Starlette's outermost middleware,
    # past the one that stamps X-Request-ID on every other response.
    return JSONResponse(
        body, status_code=status, headers={**(headers or {}), "X-Request-ID": request_id}
    )


def install(app: FastAPI) -> None:
    """Register the handlers that render every failure as the one error body."""
    said = _Said()  # this app's own: another app in the process says its troubles too

    @app.exception_handler(AppforgeError)
    async def _appforge_error(request: Request, exc: AppforgeError) -> JSONResponse:
        if isinstance(exc, StorageFullError):
            return _storage_full(request, exc.__cause__ or exc, said)
        if isinstance(exc, StorageReadOnlyError):
            return _read_only(request, exc.__cause__ or exc, said)
        return error_response(
            request, exc.status_code, exc.code, exc.message, exc.details, exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(part) for part in e.get("loc", ())],
                "message": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "message": "invalid request"}
        where = ".".join(first["loc"])
        message = f"{where}: {first['message']}" if where else str(first["message"])
        return error_response(request, 422, "VALIDATION_ERROR", message, {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = str(exc.detail) if exc.detail else code.replace("_", " ").lower()
        return error_response(
            request, exc.status_code, code, message, None, getattr(exc, "headers", None)
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if storage_full(exc):
            return _storage_full(request, exc, said)
        if read_only(exc):
            return _read_only(request, exc, said)
        reason = unavailable(exc)
        if reason is None:
            raise exc  # a bug's database error: the 500 below, with its traceback
        # An outage: said without a traceback.
        said.now_and_then("database", "the database cannot be reached (%s): answering 503", reason)
        message = "the database cannot be reached; try again shortly"
        if timed_out(exc):
            message = "the database did not answer in time (busy or locked); try again shortly"
        retry = {"Retry-After": str(DATABASE_RETRY_SECONDS)}
        return error_response(request, 503, "DATABASE_UNAVAILABLE", message, None, retry)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        if storage_full(exc):  # writing a file (an upload, say)
            return _storage_full(request, exc, said)
        if read_only(exc):
            return _read_only(request, exc, said)
        raise exc  # any other: the 500 below, with its traceback

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request, 500, "INTERNAL_ERROR", "internal server error; see the server log"
        )


def _storage_full(request: Request, exc: BaseException, said: _Said) -> JSONResponse:
    """507 ``STORAGE_FULL``: a write found the disk full. What the request wrote was
    rolled back (a transaction) or removed (a file written through a temporary one)."""
    said.now_and_then("disk", "the disk is full (%s): answering 507 to writes", exc)
    full = StorageFullError()
    return error_response(request, full.status_code, full.code, full.message)


def _read_only(request: Request, exc: BaseException, said: _Said) -> JSONResponse:
    """503 ``STORAGE_READ_ONLY``: a write found the storage read-only; nothing stored."""
    said.now_and_then("read-only", "the storage is read-only (%s): answering 503 to writes", exc)
    refused = StorageReadOnlyError()
    return error_response(
        request, refused.status_code, refused.code, refused.message, None, refused.headers
    )


DATABASE_RETRY_SECONDS = 5


class _Said:
    """Warnings without a traceback, at most once per 10 s for each kind of trouble
    (not one per request while it lasts)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}  # when the log last said each trouble

    def now_and_then(self, trouble: str, message: str, reason: object) -> None:
        now = time.monotonic()
        if now - self._last.get(trouble, -math.inf) >= 10:
            self._last[trouble] = now
            log.warning(message, reason)
