"""What ``Client`` and ``AsyncClient`` share: where the server is, how a request is
authenticated and signed, when an answer is retried or is an error, how a streamed
line is read, and the prompt cache. The two clients add only their I/O.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx

from appforge.client.cache import PromptCache
from appforge.client.calls import Call
from appforge.client.errors import ServerError, StreamError, error_from
from appforge.client.models import StreamChunk
from appforge.core import signing

# What a Sleep step of an operation receives back (operations ignore it).
NO_RESPONSE = httpx.Response(204)


class BaseClient:
    """The settings of a client and everything it decides without doing I/O."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        signing_secret: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        prompt_cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.signing_secret = signing_secret
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.prompt_cache = PromptCache(prompt_cache_ttl, clock)

    # --- requests ---------------------------------------------------------------------

    def _headers(self, call: Call, url: httpx.URL) -> dict[str, str]:
        headers = dict(call.headers)
        if call.json is not None and call.content is None:
            headers.setdefault("Content-Type", "application/json")
        if call.upload is not None:
            headers["Content-Type"] = call.upload.content_type
            headers["Content-Length"] = str(call.upload.length())
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
            if self.signing_secret:
                stamp = signing.timestamp_now()
                headers[signing.TIMESTAMP_HEADER] = stamp
                body_sha256 = (
                    call.upload.sha256()
                    if call.upload is not None
                    else hashlib.sha256(call.body()).hexdigest()
                )
                headers[signing.SIGNATURE_HEADER] = signing.sign_hashed(
                    self.signing_secret,
                    self.token,
                    stamp,
                    call.method,
                    url.raw_path.decode(),
                    body_sha256,
                )
        return headers

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        url = httpx.URL(self.base_url + call.path, params=call.params)
        content: bytes | Iterator[bytes] | AsyncIterator[bytes] | None = call.body() or None
        if call.upload is not None:  # streamed: read from the file as it is sent
            is_async = isinstance(http, httpx.AsyncClient)
            content = call.upload.apieces() if is_async else call.upload.pieces()
        return http.build_request(
            call.method, str(url), content=content, headers=self._headers(call, url)
        )

    # --- answers ----------------------------------------------------------------------

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying (429, 503: ``Retry-After``), or None to give up."""
        if response.status_code not in (429, 503) or attempt >= self.max_retries:
            return None
        header = response.headers.get("retry-after", "")
        wait = float(header) if header.replace(".", "", 1).isdigit() else 0.5 * 2**attempt
        return min(wait, self.max_retry_wait)

    @staticmethod
    def _check(response: httpx.Response) -> None:
        """Raise the answer's error, if it is one (the body has been read)."""
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise error_from(response.status_code, body)

    @staticmethod
    def _line(raw: str, sse: bool) -> StreamChunk | None:
        """One line of a streamed answer as a chunk; None for SSE framing and blank lines."""
        if sse:
            if not raw.startswith("data: "):
                return None
            raw = raw[len("data: ") :]
        if not raw.strip():
            return None
        obj = json.loads(raw)
        if "error" in obj:
            raise error_from(200, obj, StreamError)
        return StreamChunk.model_validate(obj)

    # --- the prompt cache -------------------------------------------------------------

    def _cached(self, call: Call) -> httpx.Response | None:
        """A fresh kept answer to this call, if it is a prompt read."""
        if call.prompt_cache != "read":
            return None
        return self.prompt_cache.fresh(call.cache_key())

    def _answered(self, call: Call, response: httpx.Response) -> None:
        """Keep a prompt read's answer; after a prompt write, nothing kept is fresh."""
        if call.prompt_cache == "read":
            self.prompt_cache.keep(call.cache_key(), response)
        elif call.prompt_cache == "write":
            self.prompt_cache.expire()

    def _stale(self, call: Call, exc: Exception) -> httpx.Response | None:
        """The last answer to a prompt read the server could not answer now, if any."""
        down = isinstance(exc, httpx.TransportError) or (
            isinstance(exc, ServerError) and exc.status >= 500
        )
        if call.prompt_cache != "read" or not down:
            return None
        return self.prompt_cache.last(call.cache_key())
