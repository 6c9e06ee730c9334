"""Rate limits: a token bucket per caller, and the buckets the API keeps.

Each bucket holds ``burst`` requests and refills at ``requests / window`` per
second. The buckets:

- ``ip:<address>``: requests without a key, by client address
  (``api.proxies.client_key``: an IPv6 client by its /64), at the server's rate;
- ``token:<id>``: requests with a key, counted once the key is known
  (``api.deps``), at the key's own ``rate_limit`` or the server's rate;
- ``public:<app>:<address>``: runs of a public app without a key, at the app's
  ``limits.public_rate`` or ``APPFORGE_RATE_LIMIT__PUBLIC_RATE``;
- ``authfail:<address>``: failed authentications; when it is empty, requests
  with a key from that address are 429 before the key is even looked at.

Every limited response carries ``X-RateLimit-Limit`` (the bucket size),
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (the Unix time when the
bucket is full again) of the tightest bucket it was counted in; a request that
finds a bucket empty gets 429 ``RATE_LIMITED`` with ``Retry-After``.

Buckets live in process memory by default. With ``APPFORGE_REDIS_URL`` they
live in Redis, updated by one Lua script per request using Redis' clock, so
every API process shares the same limit; while Redis cannot be reached, each
process limits with its own buckets (never unlimited), asking Redis again
every few seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, body_for
from api.proxies import scope_client_key
from appforge.core.metrics import RATE_LIMIT_REFUSALS
from appforge.core.outage import Outage
from appforge.core.settings import RateLimitSettings, parse_rate

log = logging.getLogger(__name__)

EXEMPT = frozenset({"/api/health", "/api/health/ready", "/metrics"})
# Requests with a key under these paths are counted once the key is known (api.deps).
COUNTED_AFTER_AUTH = ("/api/", "/v1/")
_STATE_KEY = "ratelimit"


@dataclass(frozen=True)
class Rate:
    """``requests`` refilled every ``window_seconds``, at most ``burst`` at once."""

    requests: float
    window_seconds: float
    burst: int

    @property
    def per_second(self) -> float:
        return self.requests / self.window_seconds

    @classmethod
    def of(cls, text: str) -> Rate:
        """``"30/minute"``: 30 at once, refilled over a minute."""
        count, seconds = parse_rate(text)
        return cls(count, seconds, count)

    @classmethod
    def default(cls, settings: RateLimitSettings) -> Rate:
        return cls(settings.requests, settings.window_seconds, settings.burst)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # Unix time when the bucket is full again
    retry_after: int

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


Clock = Callable[[], float]
"""Seconds as a float: ``time.monotonic`` for buckets, ``time.time`` for reset times."""


def _decide(
    tokens: float, allowed: bool, rate: float, burst: int, wall_clock: Clock = time.time
) -> Decision:
    return Decision(
        allowed=allowed,
        limit=burst,
        remaining=max(0, math.floor(tokens)),
        reset_at=math.ceil(wall_clock() + (burst - tokens) / rate),
        retry_after=0 if allowed else max(1, math.ceil((1 - tokens) / rate)),
    )


class Limiter(Protocol):
    settings: RateLimitSettings

    async def hit(self, key: str, rate: Rate | None = None, cost: int = 1) -> Decision | None:
        """Take ``cost`` requests (0: only look) from ``key``'s bucket at ``rate``
        (default: the server's); None when the limiter cannot tell (not limiting)."""
        ...

    async def close(self) -> None: ...


class MemoryLimiter:
    """Buckets in this process (the embedded default).

    ``clock`` measures refills (monotonic: immune to the system clock being set);
    ``wall_clock`` gives the Unix time of ``X-RateLimit-Reset``. Tests pass their own.
    """

    def __init__(
        self,
        settings: RateLimitSettings,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.rate = Rate.default(settings)
        self.clock = clock
        self.wall_clock = wall_clock
        self._buckets: dict[str, tuple[float, float, Rate]] = {}
        self._lock = threading.Lock()

    async def hit(self, key: str, rate: Rate | None = None, cost: int = 1) -> Decision:
        rate = rate or self.rate
        now = self.clock()
        with self._lock:
            tokens, last, _ = self._buckets.get(key, (float(rate.burst), now, rate))
            tokens = min(float(rate.burst), tokens + (now - last) * rate.per_second)
            allowed = tokens >= 1
            if allowed:
                tokens -= cost
            self._buckets[key] = (tokens, now, rate)
            if len(self._buckets) > 100_000:  # forget full buckets: they hold no state
                self._buckets = {
                    k: v
                    for k, v in self._buckets.items()
                    if v[0] + (now - v[1]) * v[2].per_second < v[2].burst
                }
        return _decide(tokens, allowed, rate.per_second, rate.burst, self.wall_clock)

    async def close(self) -> None:
        return None


# KEYS[1] = bucket; ARGV = rate per second, burst, cost (0: only look). Redis' own clock keeps
# processes on different hosts consistent.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens)}
"""


REDIS_RETRY_SECONDS = 5.0  # how long a process keeps its own buckets after Redis failed


class RedisLimiter:
    """Buckets in Redis, shared by every API process."""

    def __init__(self, settings: RateLimitSettings, url: str) -> None:
        import redis.asyncio as aioredis

        self.settings = settings
        self.rate = Rate.default(settings)
        self._redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self._redis.register_script(_SCRIPT)
        # While Redis cannot be reached: this process's own buckets, and Redis is asked
        # again only after a pause (a request does not wait out a connect timeout each).
        self._fallback = MemoryLimiter(settings)
        self._outage = Outage(
            log,
            "Redis cannot be reached ({reason}): rate limits are kept in this process "
            "until it answers",
            "Redis answers again: rate limits are shared by every process again",
        )

    async def hit(self, key: str, rate: Rate | None = None, cost: int = 1) -> Decision | None:
        rate = rate or self.rate
        failed_at = self._outage.last_failure
        if failed_at is not None and time.monotonic() < failed_at + REDIS_RETRY_SECONDS:
            return await self._fallback.hit(key, rate, cost)
        try:
            allowed, tokens = await self._script(
                keys=[f"appforge:ratelimit:{key}"], args=[rate.per_second, rate.burst, cost]
            )
        except Exception as exc:  # Redis down: limit in this process rather than fail calls
            self._outage.failed(type(exc).__name__)
            return await self._fallback.hit(key, rate, cost)
        self._outage.answered()
        return _decide(float(tokens), bool(int(allowed)), rate.per_second, rate.burst)

    async def close(self) -> None:
        await self._redis.aclose()


def make_limiter(settings: RateLimitSettings, redis_url: str | None) -> Limiter:
    if redis_url:
        return RedisLimiter(settings, redis_url)
    return MemoryLimiter(settings)


class RateLimitedError(ApiError):
    """429 ``RATE_LIMITED``: a bucket is empty (with ``Retry-After`` and ``X-RateLimit-*``)."""

    code = "RATE_LIMITED"
    status_code = 429

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        RATE_LIMIT_REFUSALS.inc()  # every refusal makes one of these
        super().__init__(
            message or f"too many requests: retry after {decision.retry_after} s",
            details={"limit": decision.limit, "retry_after": decision.retry_after},
            headers=decision.headers(),
        )


def note(state: dict[str, object], decision: Decision) -> None:
    """Remember a request's decision for its response headers: the tightest bucket wins."""
    seen = state.get(_STATE_KEY)
    if not isinstance(seen, Decision) or decision.remaining < seen.remaining:
        state[_STATE_KEY] = decision


def _has_key(scope: Scope) -> bool:
    return any(
        name in (b"authorization", b"x-api-key") and value.strip()
        for name, value in scope["headers"]
    )


class RateLimitMiddleware:
    """Count each request without a key against its address's bucket (429 when it is
    empty), and give every response the ``X-RateLimit-*`` headers of its tightest bucket."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not (_has_key(scope) and scope["path"].startswith(COUNTED_AFTER_AUTH)):
            decision = await self.limiter.hit("ip:" + scope_client_key(scope))
            if decision is not None:
                note(state, decision)
                if not decision.allowed:
                    error = RateLimitedError(decision)
                    request_id = str(state.get("request_id", ""))
                    body = body_for(
                        scope["path"], 429, error.code, error.message, error.details, request_id
                    )
                    response = JSONResponse(body, status_code=429, headers=error.headers)
                    await response(scope, receive, send)
                    return

        async def send_with_headers(message: Message) -> None:
            decision = state.get(_STATE_KEY)
            if message["type"] == "http.response.start" and isinstance(decision, Decision):
                raw = list(message.get("headers", []))
                if not any(k.lower() == b"x-ratelimit-limit" for k, _ in raw):
                    raw += [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]
                message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with_headers)
