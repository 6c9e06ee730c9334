"""``Client``: the operations over ``httpx.Client`` (blocking)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from appforge.client.apps import AppMethods, run_call
from appforge.client.audit import AuditMethods
from appforge.client.base import NO_RESPONSE, BaseClient
from appforge.client.calls import Call, Op, Sleep
from appforge.client.datasources import DatasourceMethods
from appforge.client.errors import ServerError
from appforge.client.evals import EvalMethods
from appforge.client.models import StreamChunk
from appforge.client.policies import PolicyMethods
from appforge.client.prompts import PromptMethods
from appforge.client.providers import ProviderMethods
from appforge.client.server import ServerMethods
from appforge.client.versions import VersionMethods
from appforge.client.webhooks import WebhookMethods

T = TypeVar("T")


class Client(
    BaseClient,
    AppMethods,
    DatasourceMethods,
    PromptMethods,
    VersionMethods,
    WebhookMethods,
    ServerMethods,
    ProviderMethods,
    AuditMethods,
    EvalMethods,
    PolicyMethods,
):
    """Synchronous client of the appforge API; use it as a context manager, or ``close()``.

    ``http`` is a ready ``httpx.Client`` to send through (a test's ``TestClient``, one
    with event hooks); ``clock`` is what the prompt cache measures its TTL with.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        http: httpx.Client | None = None,
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
        self._http = http or httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(
        self,
        uuid: str,
        input: dict[str, Any] | None = None,
        session_id: str | None = None,
        *,
        sse: bool = False,
    ) -> Iterator[StreamChunk]:
        """Run with ``stream: true``; yields chunks, the last one with ``done=True``."""
        call = run_call(uuid, input, session_id, stream=True)
        if sse:
            call.headers["Accept"] = "text/event-stream"
        response = self._open(call)
        try:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            for raw in response.iter_lines():
                chunk = self._line(raw, sse)
                if chunk is not None:
                    yield chunk
        finally:
            response.close()

    def _open(self, call: Call) -> httpx.Response:
        """Send a streamed request, retried on 429/503; the caller reads and closes it."""
        attempt = 0
        while True:
            response = self._http.send(self._request(self._http, call), stream=True)
            wait = self._retry_wait(response, attempt)
            if wait is None:
                return response
            response.close()
            time.sleep(wait)
            attempt += 1

    def _drive(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = op.send(NO_RESPONSE)
                else:
                    step = op.send(self._send(step))
        except StopIteration as done:
            result: T = done.value
            return result

    def _send(self, call: Call) -> httpx.Response:
        """One call's answer: a fresh kept one, the server's, or (server down) a stale one."""
        cached = self._cached(call)
        if cached is not None:
            return cached
        try:
            response = self._exchange(call)
        except (httpx.TransportError, ServerError) as exc:
            stale = self._stale(call, exc)
            if stale is None:
                raise
            return stale
        self._answered(call, response)
        return response

    def _exchange(self, call: Call) -> httpx.Response:
        """Send, retrying 429/503 after ``Retry-After``; raise the answer's error."""
        attempt = 0
        while True:
            response = self._http.send(self._request(self._http, call))
            wait = self._retry_wait(response, attempt)
            if wait is None:
                self._check(response)
                return response
            time.sleep(wait)
            attempt += 1
