"""Rate limits per token (per client IP without a token): a token bucket.

Each caller has a bucket of ``burst`` requests that refills at
``requests / window_seconds`` per second. Every limited response carries
``X-RateLimit-Limit`` (the bucket size), ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (the Unix time when the bucket is full again); a request
that finds the bucket empty gets 429 ``RATE_LIMITED`` with ``Retry-After``.

Buckets live in process memory by default. With ``APPFORGE_REDIS_URL`` they
live in Redis, updated by one Lua script per request using Redis' clock, so
every API process shares the same limit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import body_for
from appforge.core.settings import RateLimitSettings

log = logging.getLogger(__name__)

EXEMPT = frozenset({"/api/health"})


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
    async def hit(self, key: str) -> Decision | None: ...

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
        self.rate = settings.requests / settings.window_seconds
        self.burst = settings.burst
        self.clock = clock
        self.wall_clock = wall_clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    async def hit(self, key: str) -> Decision:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > 100_000:  # forget full buckets: they hold no state
                self._buckets = {
                    k: v
                    for k, v in self._buckets.items()
                    if v[0] + (now - v[1]) * self.rate < self.burst
                }
        return _decide(tokens, allowed, self.rate, self.burst, self.wall_clock)

    async def close(self) -> None:
        return None


# KEYS[1] = bucket; ARGV = rate per second, burst. Redis' own clock keeps
# processes on different hosts consistent.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisLimiter:
    """Buckets in Redis, shared by every API process."""

    def __init__(self, settings: RateLimitSettings, url: str) -> None:
        import redis.asyncio as aioredis

        self.rate = settings.requests / settings.window_seconds
        self.burst = settings.burst
        self._redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self._redis.register_script(_SCRIPT)

    async def hit(self, key: str) -> Decision | None:
        try:
            allowed, tokens = await self._script(
                keys=[f"appforge:ratelimit:{key}"], args=[self.rate, self.burst]
            )
        except Exception as exc:  # Redis down: serve unlimited rather than fail every call
            log.warning("rate limiter unavailable, not limiting: %s", type(exc).__name__)
            return None
        return _decide(float(tokens), bool(int(allowed)), self.rate, self.burst)

    async def close(self) -> None:
        await self._redis.aclose()


def make_limiter(settings: RateLimitSettings, redis_url: str | None) -> Limiter:
    if redis_url:
        return RedisLimiter(settings, redis_url)
    return MemoryLimiter(settings)


def caller_key(scope: Scope) -> str:
    """The token's hash when one is sent, else the client's IP address."""
    for name, value in scope["headers"]:
        if name in (b"authorization", b"x-api-key") and value.strip():
            secret = value.split(b" ", 1)[-1].strip()
            return "token:" + hashlib.sha256(secret).hexdigest()[:32]
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


class RateLimitMiddleware:
    """Count each request against its caller's bucket; 429 when it is empty."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        decision = await self.limiter.hit(caller_key(scope))
        if decision is None:
            await self.app(scope, receive, send)
            return
        headers = decision.headers()
        if not decision.allowed:
            request_id = str(scope.get("state", {}).get("request_id", ""))
            body = body_for(
                scope["path"],
                429,
                "RATE_LIMITED",
                f"too many requests: retry after {decision.retry_after} s",
                {"limit": decision.limit, "retry_after": decision.retry_after},
                request_id,
            )
            response = JSONResponse(body, status_code=429, headers=headers)
            await response(scope, receive, send)
            return
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + raw
            await send(message)

        await self.app(scope, receive, send_with_headers)
