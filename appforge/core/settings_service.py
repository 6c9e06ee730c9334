"""The service sections of the settings: rate limits, CORS, auth, webhooks, the
audit log, health, metrics and traces (``APPFORGE_<SECTION>__*``). Re-exported
by :mod:`appforge.core.settings`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, SecretStr, field_validator

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
        description="How long each API process remembers a token it looked up (0: never). "
        "A revoked token stops working at once in every process (on PostgreSQL the others "
        "are notified); this time only bounds how long a process that missed the "
        "notification (its listening connection was down) may still accept it.",
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
