"""Settings: one pydantic-settings class read from ``APPFORGE_*`` variables.

Entry points build a :class:`Settings` and pass it down; nothing reads the
environment at import time. Nested sections use ``__`` in variable names, e.g.
``APPFORGE_LOCAL__N_CTX=4096``. Every field here is documented in README.md
(a test checks it).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from appforge.core.settings_models import (
    BUILTIN_PROVIDERS,
    HEADER_NAME_PATTERN,
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    OPENAI_BASE_URL,
    RESERVED_HEADERS,
    LocalModelSettings,
    OpenAISettings,
    PostgresSettings,
    check_api_key,
    check_headers,
    check_provider_name,
    header_value_ok,
)
from appforge.core.settings_service import (
    ORIGIN_PATTERN,
    RATE_PATTERN,
    AuditSettings,
    AuthSettings,
    CorsSettings,
    HealthSettings,
    MetricsSettings,
    OtelSettings,
    RateLimitSettings,
    WebhookSettings,
    parse_rate,
)

__all__ = [
    "AuditSettings",
    "AuthSettings",
    "BUILTIN_PROVIDERS",
    "CorsSettings",
    "DatasourceSettings",
    "EvalSettings",
    "HEADER_NAME_PATTERN",
    "HealthSettings",
    "LimitSettings",
    "LocalModelSettings",
    "MAX_HEADERS",
    "MAX_HEADER_VALUE_CHARS",
    "MetricsSettings",
    "OPENAI_BASE_URL",
    "ORIGIN_PATTERN",
    "OpenAISettings",
    "OtelSettings",
    "PostgresSettings",
    "RATE_PATTERN",
    "RESERVED_HEADERS",
    "RateLimitSettings",
    "RunSettings",
    "SessionSettings",
    "Settings",
    "WebhookSettings",
    "check_api_key",
    "check_headers",
    "check_provider_name",
    "header_value_ok",
    "parse_rate",
]


def _default_home() -> Path:
    return Path.home() / ".appforge"


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
    max_messages: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Most messages one /v1/chat/completions request may send (422 above).",
    )
    max_message_chars: int = Field(
        default=32_000,
        ge=1,
        description="Longest message (characters, text parts joined) /v1 accepts (422 above).",
    )
    max_template_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest rendered template, and largest string a template may build "
        "(`TEMPLATE_TOO_LARGE` above).",
    )
    max_template_items: int = Field(
        default=100_000,
        ge=100,
        description="Longest range() or list a template may build (`TEMPLATE_TOO_LARGE` above).",
    )
    max_output_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest output of one run, as JSON; a run above fails with "
        "`OUTPUT_TOO_LARGE` and its output is not stored.",
    )
    header_timeout_seconds: float = Field(
        default=20.0,
        ge=0.1,
        le=600,
        description="`appforge serve`: a connection sends a request's whole header within "
        "this of opening (or of its next request's first byte), or is answered 408 and closed.",
    )
    send_timeout_seconds: float = Field(
        default=60.0,
        ge=0.1,
        le=3600,
        description="`appforge serve`: a client that reads too little of its answer to drain "
        "the server's write buffer (about 48 KiB) within this is reset; a streamed run "
        "still going then ends `cancelled`.",
    )
    max_header_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="`appforge serve`: the largest request line and header together; a "
        "larger one is answered 431 `REQUEST_HEADER_TOO_LARGE` and its connection closed.",
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="`appforge serve`: client connections one API process holds at most; "
        "more are answered 503 `SERVER_BUSY` and closed. 0 = its open-files limit less a "
        "reserve for its own files (an eighth, at least 256), which also caps any value.",
    )
    max_connections_per_client: int = Field(
        default=256,
        ge=0,
        description="`appforge serve`: connections one client address holds at most in one "
        "API process (trusted proxies excepted); more are answered 429 "
        "`TOO_MANY_CONNECTIONS` and closed. 0 = no limit.",
    )
    body_timeout_seconds: float = Field(
        default=20.0,
        ge=0.1,
        le=600,
        description="Longest wait for the next piece of a request body (408 `REQUEST_TIMEOUT`).",
    )
    body_min_rate: int = Field(
        default=500,
        ge=0,
        description="Bytes a second a request body averages at least, once "
        "`body_timeout_seconds` have passed (408 below); 0 = no rate.",
    )
    render_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Time limit of rendering a prompt version through the prompts API "
        "(`RENDER_TIMEOUT` above); runs use their own timeout.",
    )


class RunSettings(BaseModel):
    """How runs execute: worker threads, concurrency per app, time limit; analytics' range."""

    workers: int = Field(default=16, ge=1, le=256, description="Run threads per API process.")
    max_active_per_app: int = Field(
        default=16, ge=1, description="Runs of one app at once (429 above); an app may lower it."
    )
    max_active_per_client: int = Field(
        default=4,
        ge=0,
        description="Runs one caller without a token has going at once, by its address, "
        "over every app and API process (429 above); 0 = no limit. Callers with a token "
        "are not counted.",
    )
    timeout_seconds: float = Field(
        default=300, gt=0, description="A run still going after this ends as `timeout`."
    )
    heartbeat_seconds: float = Field(
        default=10,
        gt=0,
        le=3600,
        description="How often each API process renews its heartbeat and fails the running"
        " runs of dead processes (`INTERRUPTED`); it also does so at start-up.",
    )
    process_timeout_seconds: float = Field(
        default=60,
        gt=0,
        description="A process whose heartbeat is older than this is dead (on its own"
        " machine a process is dead at once when its pid is gone); keep it several"
        " heartbeats long.",
    )
    analytics_max_buckets: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Longest analytics range, in buckets of its size (422 above).",
    )

    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Finished runs created longer ago than this are deleted, in batches "
        "(empty: kept forever).",
    )

    @model_validator(mode="after")
    def _timeout_after_heartbeat(self) -> RunSettings:
        if self.process_timeout_seconds <= self.heartbeat_seconds:
            raise ValueError("runs.process_timeout_seconds must exceed runs.heartbeat_seconds")
        return self


class EvalSettings(BaseModel):
    """Evaluations: datasets' bounds and the workers that run evaluations' cases."""

    workers: int = Field(
        default=4,
        ge=0,
        le=64,
        description="Evaluation threads per API process (0: none); each runs one case at a "
        "time, so this is how many cases run at once in a process.",
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, description="How often an idle evaluation worker looks for cases."
    )
    max_concurrency: int = Field(
        default=16, ge=1, le=256, description="Largest `concurrency` an evaluation may ask for."
    )
    max_cases_per_dataset: int = Field(
        default=10_000, ge=1, description="Cases one dataset may hold (413 `TOO_MANY_CASES`)."
    )
    max_cases_per_request: int = Field(
        default=1_000,
        ge=1,
        description="Cases one add or import may carry (413 `TOO_MANY_CASES`).",
    )
    max_case_bytes: int = Field(
        default=64 * 1024,
        ge=256,
        description="Largest case (its input, expected and metadata as JSON; 422 above).",
    )
    max_scorers: int = Field(default=20, ge=1, le=200, description="Scorers per evaluation.")
    max_pattern_bytes: int = Field(
        default=2_000, ge=16, description="Longest `regex` scorer pattern."
    )
    max_schema_bytes: int = Field(
        default=32 * 1024, ge=256, description="Largest `json_schema` scorer schema, as JSON."
    )


class SessionSettings(BaseModel):
    """Chat sessions."""

    ttl_days: float | None = Field(
        default=None,
        gt=0,
        description="Sessions not used for this long are deleted with their turns, in "
        "batches (empty: kept forever).",
    )


class DatasourceSettings(BaseModel):
    """Datasources: chunking defaults, URL fetching, entry size, ingestion workers."""

    chunk_size: int = Field(default=1000, ge=50, le=20_000, description="Characters per chunk.")
    chunk_overlap: int = Field(
        default=150, ge=0, le=5_000, description="Characters shared by neighbouring chunks."
    )
    max_entry_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description="Largest text entry or fetched URL body (413 or a failed entry above).",
    )
    max_file_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1,
        description="Largest file entry, uploaded (multipart, streamed to disk) or sent as "
        "base64 (413 above, nothing stored).",
    )
    fetch_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a whole URL fetch may take, DNS lookups, connecting, headers, "
        "redirects and body included (FETCH_TIMEOUT after).",
    )
    max_redirects: int = Field(default=5, ge=0, le=20, description="Redirects a URL fetch follows.")
    url_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts, IPs or CIDR networks URL entries may reach even though they are "
        'private, loopback or link-local (e.g. ["127.0.0.1"]).',
    )
    workers: int = Field(
        default=3,
        ge=0,
        le=32,
        description="Ingestion threads per API process (0: none); each works on its own "
        "entries, so a slow URL holds one thread only.",
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, description="How often an idle worker looks for pending entries."
    )
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="An entry in `processing` whose worker has not reported for this long "
        "is taken over by another worker (its process died); a live worker renews its "
        "lease every third of it.",
    )
    refresh_poll_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often each process looks for URL entries whose refresh (daily, "
        "weekly) is due.",
    )
    refresh_batch: int = Field(
        default=10, ge=1, le=1000, description="URL entries one refresh round fetches."
    )
    embedding_model: Path | None = Field(
        default=None,
        description="A sentence-transformers model folder; empty = the bundled all-MiniLM-L6-v2.",
    )
    embedding_batch: int = Field(default=64, ge=1, le=4096, description="Chunks per encode call.")
    max_chunks_per_entry: int = Field(
        default=2000,
        ge=1,
        le=1_000_000,
        description="Chunks one entry may make; more fails the entry (ENTRY_TOO_LARGE).",
    )
    max_text_chars: int = Field(
        default=5_000_000,
        ge=1000,
        description="Characters of text extracted from one entry; more fails it (ENTRY_TOO_LARGE).",
    )
    max_uncompressed_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Uncompressed bytes of a DOCX/zip (all members together) or of one "
        "compressed PDF stream; more fails the entry (ARCHIVE_TOO_LARGE).",
    )
    max_archive_members: int = Field(
        default=2000,
        ge=1,
        le=60_000,
        description="Members of a DOCX/zip; more fails the entry (ARCHIVE_TOO_LARGE).",
    )
    max_compression_ratio: float = Field(
        default=100.0,
        ge=2,
        description="Uncompressed/compressed size of a zip member over 1 MiB; more fails the "
        "entry (ARCHIVE_TOO_LARGE, a zip bomb).",
    )
    max_filter_clauses: int = Field(
        default=100,
        ge=1,
        le=500,
        description="Comparisons in one search filter (`where`); Chroma fails on large trees.",
    )
    max_filter_values: int = Field(
        default=1000, ge=1, le=10_000, description="Values of one $in / $nin in a filter."
    )
    max_filter_depth: int = Field(
        default=8, ge=1, le=32, description="Nested $and / $or levels in a filter."
    )
    max_filter_bytes: int = Field(
        default=65536, ge=256, le=1_048_576, description="A filter's size as JSON."
    )
    keyword_candidates: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Best keyword matches a filtered keyword search looks among (the filter "
        "is applied to them).",
    )
    fusion_depth: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Results of each list (vector, keyword) a hybrid search fuses, at least "
        "`top_k`.",
    )


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
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    admin_token: SecretStr | None = Field(
        default=None, description="If set, this token exists with admin rights at start-up."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="The server key (at least 32 characters) that encrypts webhook and "
        "request-signing secrets at rest and keys token hashes; empty = the key file "
        "`secret.key` in the home, made 0600 on first start. Every process sharing one "
        "database needs the same key.",
    )
    secret_key_previous: SecretStr | None = Field(
        default=None,
        description="Server keys used before a rotation, comma-separated: secrets and token "
        "hashes made with them stay readable (see `appforge keys`); `secret.previous` in the "
        "home adds more, one a line.",
    )
    models: dict[str, str] = Field(
        default_factory=lambda: {"default": "local:smollm2"},
        description='Model aliases used by llm steps, e.g. {"default": "local:smollm2"}. '
        "Set, they win over aliases of the same name stored in the database; unset, the "
        "built-in default applies until the database repoints it.",
    )
    model_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="How long each process uses the providers and aliases stored in the "
        "database (Settings page, /api/providers) before checking for changes (one small "
        "query). Changes apply at once in every API process (on PostgreSQL the others are "
        "notified); this time only bounds how long a missed notification goes unseen.",
    )
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    providers: dict[str, OpenAISettings] = Field(
        default_factory=dict,
        description='More OpenAI-compatible servers by name: {"ollama": {"base_url": ...}}; '
        "their models are named <name>:<model>.",
    )
    limits: LimitSettings = Field(default_factory=LimitSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    redis_url: str | None = Field(
        default=None,
        description="Redis URL; when set, rate-limit buckets are shared by all API processes.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description='Networks (CIDRs, e.g. ["10.0.0.0/8"]) of reverse proxies whose '
        "X-Forwarded-For is believed; from anywhere else the socket peer is the client.",
    )
    client_ipv6_prefix: int = Field(
        default=64,
        ge=32,
        le=128,
        description="Limits by address (rate limits, failed sign-ins, anonymous runs at "
        "once, connections held) count IPv6 clients by their network of this many bits: "
        "one subscriber holds a whole /64. 128 = each address on its own.",
    )
    cors: CorsSettings = Field(default_factory=CorsSettings)
    runs: RunSettings = Field(default_factory=RunSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    chroma_url: str | None = Field(
        default=None,
        description="Chroma server URL (http://host:8000); empty = Chroma files in the home.",
    )
    chroma_timeout_seconds: float = Field(
        default=30.0,
        ge=0.1,
        le=600,
        description="Longest wait for one answer of the Chroma server (a hung server is "
        "then VECTOR_STORE_UNAVAILABLE, not a request that never ends).",
    )
    datasources: DatasourceSettings = Field(default_factory=DatasourceSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    evals: EvalSettings = Field(default_factory=EvalSettings)
    log_level: str = Field(default="INFO", description="Log level of the entry points.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: one JSON object per log line (time, level, logger, message, "
        "request id, run id, app uuid, route, status, latency).",
    )
    health: HealthSettings = Field(default_factory=HealthSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long runs in flight may go on (streams finish) before "
        "they are cancelled and stored `cancelled`.",
    )

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, value: dict[str, OpenAISettings]) -> dict[str, OpenAISettings]:
        for name in value:
            check_provider_name(name)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {cidr!r} is not an address or CIDR") from None
        return value

    def resolved_database_url(self) -> str:
        """The database to use: the configured URL, or SQLite inside ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'appforge.db'}"
