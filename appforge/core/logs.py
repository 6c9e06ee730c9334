"""Log lines: text or JSON, with the request, run and app they belong to.

The context of a line (``request_id``, ``run_id``, ``app_uuid``) travels in
context variables: the API's request middleware sets the request id, the run
service the run id and app uuid, and the API hands its context to the run's
worker thread, so every line a run logs names its request. The entry points
(``appforge serve``, ``appforge worker``) call :func:`configure`; library code
only logs.

``APPFORGE_LOG_FORMAT=json`` writes one JSON object per line: ``time``,
``level``, ``logger``, ``message``, the context above when set, and the
``route``, ``status``, ``method`` and ``latency_ms`` of request lines. Token
values never reach a line: whatever looks like an appforge token is masked
(:func:`mask_secrets`), a last guard behind code that logs no secrets.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "appforge_request_id", default=None
)
RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("appforge_run_id", default=None)
APP_UUID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "appforge_app_uuid", default=None
)

# Fields a log call may pass in ``extra`` that go into the JSON object as they are.
EXTRA_FIELDS = ("route", "method", "status", "latency_ms", "run_id", "app_uuid")

# API tokens (``af_...``), signing secrets (``afs_...``), the builder's session secrets
# and one-time claims (``afb_...``, ``afc_...``), and bearer values (a header written
# into a message).
SECRET_SHAPE = re.compile(
    r"\baf[bcs]?_[A-Za-z0-9_\-]{8,}|(?i:(?:bearer|token)\s+)[A-Za-z0-9_\-\.=]{12,}"
)


_NOISY = ("httpx", "httpx2", "httpcore", "openai")


def mask_secrets(text: str) -> str:
    """``text`` with anything shaped like an appforge token or a bearer value masked."""
    if "af" not in text and "earer" not in text and "oken" not in text:
        return text  # the common case, without running the pattern
    return SECRET_SHAPE.sub("***", text)


@contextmanager
def run_context(run_id: str, app_uuid: str) -> Iterator[None]:
    """Lines logged inside name this run and app."""
    run_token = RUN_ID.set(run_id)
    app_token = APP_UUID.set(app_uuid)
    try:
        yield
    finally:
        RUN_ID.reset(run_token)
        APP_UUID.reset(app_token)


class ContextFilter(logging.Filter):
    """Copies the context variables onto each record (as ``request_id``, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("request_id", REQUEST_ID), ("run_id", RUN_ID), ("app_uuid", APP_UUID)):
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is None and name == "run_id":
                value = RUN_ID.get()
            elif value is None and name == "app_uuid":
                value = APP_UUID.get()
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The plain format, secrets masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter()


def configure(level: str, kind: str) -> None:
    """Log to stderr at ``level``, as ``kind`` (``text`` or ``json``); uvicorn's own
    loggers use the same handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    if kind != "json":  # uvicorn's access line says it; JSON lines carry route and latency
        logging.getLogger("appforge.access").setLevel(logging.WARNING)
    for noisy in _NOISY:  # HTTP clients log every request at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)


def uvicorn_log_config(level: str, kind: str) -> dict[str, Any]:
    """A ``log_config`` for uvicorn (each worker process applies it): our format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {
            "main": {"()": JsonFormatter if kind == "json" else TextFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            # HTTP clients log every request at INFO: one line per run/call is enough.
            **{noisy: {"level": logging.WARNING} for noisy in _NOISY},
            **({} if kind == "json" else {"appforge.access": {"level": logging.WARNING}}),
        },
    }
