"""``AsyncClient``: the operations over ``httpx.AsyncClient``, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx

from appforge.client.apps import AsyncAppMethods, run_call
from appforge.client.audit import AsyncAuditMethods
from appforge.client.base import NO_RESPONSE, BaseClient
from appforge.client.calls import Call, Op, Sleep
from appforge.client.datasources import AsyncDatasourceMethods
from appforge.client.errors import ServerError
from appforge.client.evals import AsyncEvalMethods
from appforge.client.models import StreamChunk
from appforge.client.policies import AsyncPolicyMethods
from appforge.client.prompts import AsyncPromptMethods
from appforge.client.providers import AsyncProviderMethods
from appforge.client.server import AsyncServerMethods
from appforge.client.versions import AsyncVersionMethods
from appforge.client.webhooks import AsyncWebhookMethods

T = TypeVar("T")


class AsyncClient(
    BaseClient,
    AsyncAppMethods,
    AsyncDatasourceMethods,
    AsyncPromptMethods,
    AsyncVersionMethods,
    AsyncWebhookMethods,
    AsyncServerMethods,
    AsyncProviderMethods,
    AsyncAuditMethods,
    AsyncEvalMethods,
    AsyncPolicyMethods,
):
    """Asynchronous client: ``Client``'s operations, awaited (``async for`` over ``stream``).

    Use it as an async context manager, or ``await aclose()``.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        signing_secret: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        prompt_cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            base_url,
            token,
            signing_secret=signing_secret,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            prompt_cache_ttl=prompt_cache_ttl,
            clock=clock,
        )
        self._http = http or httpx.AsyncClient(timeout=self.timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def stream(
        self,
        uuid: str,
        input: dict[str, Any] | None = None,
        session_id: str | None = None,
        *,
        sse: bool = False,
    ) -> AsyncIterator[StreamChunk]:
        """Run with ``stream: true``; yields chunks, the last one with ``done=True``."""
        call = run_call(uuid, input, session_id, stream=True)
        if sse:
            call.headers["Accept"] = "text/event-stream"
        response = await self._open(call)
        try:
            if response.status_code >= 400:
                await response.aread()
                self._check(response)
            async for raw in response.aiter_lines():
                chunk = self._line(raw, sse)
                if chunk is not None:
                    yield chunk
        finally:
            await response.aclose()

    async def _open(self, call: Call) -> httpx.Response:
        """Send a streamed request, retried on 429/503; the caller reads and closes it."""
        attempt = 0
        while True:
            response = await self._http.send(self._request(self._http, call), stream=True)
            wait = self._retry_wait(response, attempt)
            if wait is None:
                return response
            await response.aclose()
            await asyncio.sleep(wait)
            attempt += 1

    async def _drive(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = op.send(NO_RESPONSE)
                else:
                    step = op.send(await self._send(step))
        except StopIteration as done:
            result: T = done.value
            return result

    async def _send(self, call: Call) -> httpx.Response:
        """One call's answer: a fresh kept one, the server's, or (server down) a stale one."""
        cached = self._cached(call)
        if cached is not None:
            return cached
        try:
            response = await self._exchange(call)
        except (httpx.TransportError, ServerError) as exc:
            stale = self._stale(call, exc)
            if stale is None:
                raise
            return stale
        self._answered(call, response)
        return response

    async def _exchange(self, call: Call) -> httpx.Response:
        """Send, retrying 429/503 after ``Retry-After``; raise the answer's error."""
        attempt = 0
        while True:
            response = await self._http.send(self._request(self._http, call))
            wait = self._retry_wait(response, attempt)
            if wait is None:
                self._check(response)
                return response
            await asyncio.sleep(wait)
            attempt += 1
