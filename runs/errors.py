"""Errors of the run service; every one derives from ``appforge.core.errors.AppforgeError``.

RunServiceError                base (400)
├── AppNotFoundError           404 APP_NOT_FOUND
├── RunNotFoundError           404 RUN_NOT_FOUND
├── AppVersionNotFoundError    404 APP_VERSION_NOT_FOUND (a run of an earlier version)
├── SessionNotFoundError       404 SESSION_NOT_FOUND (also: not this caller's, another app's)
├── RunAuthError               401 AUTH_REQUIRED: a private app run without a token
├── RunConflictError           409 FLOW_NOT_SERVED
├── AppAmbiguousError          409 APP_AMBIGUOUS: a name several apps share
├── SessionBusyError           409 SESSION_BUSY: the session has a run going (Retry-After)
├── SessionIdInvalidError      422 SESSION_ID_INVALID
├── TooManyRunsError           429 TOO_MANY_ACTIVE_RUNS (with Retry-After)
└── ChatRequestError           422: an OpenAI-style message list that cannot run the app
                               (TOO_MANY_MESSAGES, MESSAGE_TOO_LONG, LAST_MESSAGE_NOT_USER,
                               MESSAGE_ROLE_UNSUPPORTED, OPENAI_INPUT_UNKNOWN,
                               OPENAI_OUTPUT_UNKNOWN)

A run that starts and then fails is not an exception: it ends with a
``Failed`` event and is stored with its error. What its caller is told of that
error is :func:`told`: a caller who cannot edit apps (anonymous, a runner key,
a viewer) gets plain words instead of a message that may name the servers behind
the app, while the stored run keeps the whole message for the app's owner.
"""

from __future__ import annotations

from appforge.core.errors import AppforgeError


class RunServiceError(AppforgeError):
    code = "RUN_ERROR"
    status_code = 400


class AppNotFoundError(RunServiceError):
    code = "APP_NOT_FOUND"
    status_code = 404


class RunNotFoundError(RunServiceError):
    code = "RUN_NOT_FOUND"
    status_code = 404


class AppVersionNotFoundError(RunServiceError):
    code = "APP_VERSION_NOT_FOUND"
    status_code = 404


class SessionNotFoundError(RunServiceError):
    code = "SESSION_NOT_FOUND"
    status_code = 404


class RunAuthError(RunServiceError):
    code = "AUTH_REQUIRED"
    status_code = 401


class RunConflictError(RunServiceError):
    code = "CONFLICT"
    status_code = 409


class AppAmbiguousError(RunServiceError):
    code = "APP_AMBIGUOUS"
    status_code = 409


class SessionBusyError(RunServiceError):
    code = "SESSION_BUSY"
    status_code = 409


class SessionIdInvalidError(RunServiceError):
    code = "SESSION_ID_INVALID"
    status_code = 422


class TooManyRunsError(RunServiceError):
    code = "TOO_MANY_ACTIVE_RUNS"
    status_code = 429


class ChatRequestError(RunServiceError):
    code = "CHAT_REQUEST_INVALID"
    status_code = 422


# Failures whose message may name what is behind the app: a model server's address or
# its own error text, a Python exception's text. The code always reaches the caller.
_PLAIN_WORDS = {
    "PROVIDER_ERROR": "the model could not answer",
    "PROVIDER_UNAVAILABLE": "the model is unavailable right now; try again shortly",
    "PROVIDER_AUTH_FAILED": "the app's model is not set up correctly",
    "MODEL_NOT_FOUND": "the app's model is not available",
    "RUN_FAILED": "the run failed",
    "FLOW_STEP_FAILED": "a step of the app failed",
    "INTERNAL_ERROR": "internal error while running the app",
}
TRUSTED_ROLES = frozenset({"admin", "editor"})  # who built the app may read why it failed


def told(code: str, message: str, role: str | None) -> str:
    """The message a run's caller with ``role`` (None: anonymous) gets for its failure."""
    if role in TRUSTED_ROLES or code not in _PLAIN_WORDS:
        return message
    return f"{_PLAIN_WORDS[code]} (the app's owner can see why in the run)"
