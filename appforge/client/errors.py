"""Errors the server answers with, as exceptions chosen by the HTTP status.

Every error body of the API is ``{"error": {"code", "message", "details"}, "request_id"}``;
the client raises it as one of::

    ApiError                   status, code, message, details, request_id
    ├── AuthenticationError    401: no token, an unknown or revoked one, a bad signature
    ├── PermissionDeniedError  403
    ├── NotFoundError          404: APP_NOT_FOUND, RUN_NOT_FOUND, ...
    ├── ConflictError          409
    ├── InvalidRequestError    400/413/415/422: YAML_INVALID, APP_INVALID, INPUT_INVALID, ...
    ├── RateLimitedError       429 after the retries ran out
    ├── ServerError            5xx
    └── StreamError            a streamed run failed after its first chunk

Transport failures (the server unreachable, a timeout) stay ``httpx.HTTPError``.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer of the server: ``status``, ``code``, ``message``, ``details``."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, request_id: str = ""
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: Any = details or {}
        self.request_id = request_id


class AuthenticationError(ApiError):
    """401: no token, an unknown or revoked one, or a bad signature."""


class PermissionDeniedError(ApiError):
    """403."""


class NotFoundError(ApiError):
    """404: APP_NOT_FOUND, RUN_NOT_FOUND, ..."""


class ConflictError(ApiError):
    """409."""


class InvalidRequestError(ApiError):
    """400/413/415/422: YAML_INVALID, APP_INVALID, INPUT_INVALID, ..."""


class RateLimitedError(ApiError):
    """429 after the retries ran out."""


class ServerError(ApiError):
    """5xx: the run failed, the model backend failed, or a server bug."""


class StreamError(ApiError):
    """A streamed run failed after its first chunk (the error line of the stream)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
}


def error_from(status: int, body: Any, cls: type[ApiError] | None = None) -> ApiError:
    """The exception for an error body (``cls``, else the class of ``status``)."""
    fields = body if isinstance(body, dict) else {}
    err = fields.get("error")
    err = err if isinstance(err, dict) else {}
    kind = cls or _BY_STATUS.get(status) or (ServerError if status >= 500 else InvalidRequestError)
    return kind(
        status,
        str(err.get("code", "HTTP_ERROR")),
        str(err.get("message", f"HTTP {status}")),
        err.get("details"),
        str(fields.get("request_id", "")),
    )
