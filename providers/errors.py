"""Errors raised by LLM providers, and :func:`server_message`: a model server's own words
for what failed, as they are kept and shown.

Every one derives from the root ``appforge.core.errors.AppforgeError``.

Each error carries a stable UPPER_SNAKE ``code`` and the HTTP ``status_code``
that ``api/errors.py`` answers with::

    ProviderError                  PROVIDER_ERROR          502  generic backend failure
    ├── ProviderUnavailableError   PROVIDER_UNAVAILABLE    503  backend down or unreachable
    ├── ModelNotFoundError         MODEL_NOT_FOUND         422  unknown model, or no model file
    ├── ContextWindowExceededError CONTEXT_WINDOW_EXCEEDED 422  prompt longer than the context
    ├── ProviderRateLimitedError   PROVIDER_RATE_LIMITED   429  the backend throttled us
    └── ProviderAuthError          PROVIDER_AUTH_FAILED    502  the backend refused our credentials
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from appforge.core.errors import AppforgeError
from appforge.core.values import storable_text


class ProviderError(AppforgeError):
    """Base of every provider error; also used as is for generic failures."""

    code: str = "PROVIDER_ERROR"
    status_code: int = 502


class ProviderUnavailableError(ProviderError):
    """The backend cannot serve requests right now (down, or its model is missing)."""

    code = "PROVIDER_UNAVAILABLE"
    status_code = 503


class ModelNotFoundError(ProviderError):
    """The requested model (or alias, or provider prefix) is not configured."""

    code = "MODEL_NOT_FOUND"
    status_code = 422


class ProviderRateLimitedError(ProviderError):
    """The backend rejected the request because of a rate limit."""

    code = "PROVIDER_RATE_LIMITED"
    status_code = 429


class ProviderAuthError(ProviderError):
    """The backend rejected our credentials (a server-side configuration problem)."""

    code = "PROVIDER_AUTH_FAILED"
    status_code = 502


class ContextWindowExceededError(ProviderError):
    """The prompt alone does not fit in the model's context window."""

    code = "CONTEXT_WINDOW_EXCEEDED"
    status_code = 422


def server_message(response: httpx.Response) -> str:
    """The server's own error message (OpenAI's ``{"error": {"message"}}``), bounded."""
    try:
        raw = response.content
    except httpx.ResponseNotRead:  # the body broke off
        raw = b""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message is None and isinstance(body.get("detail"), str):
            message = body["detail"]
    if not message:
        message = raw.decode(errors="replace").strip() or response.reason_phrase
    return storable_text(str(message)[:300])  # kept with the failed run, sent in answers
