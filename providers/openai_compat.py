"""Any OpenAI-compatible chat server, spoken to over HTTP with httpx.

One provider instance talks to one server (OpenAI, vLLM, Ollama, llama.cpp
server, LM Studio): the ``openai`` section of the settings, or a named entry of
``APPFORGE_PROVIDERS``. Model names are passed to the server as they are.

- One ``httpx.Client`` per provider holds the connection pool (built on first
  use, closed by :meth:`OpenAICompatProvider.close`), and sends any ``headers``.
- Streams are ``POST {base_url}/chat/completions`` with ``stream`` and
  ``stream_options.include_usage``; each Server-Sent Event's ``data`` is read
  with ``json.loads`` into a dict and picked apart by hand, until
  ``data: [DONE]``. No model object is built per chunk: under load, the openai
  SDK's doing so took a fifth of the server's time (bench/openai_stream.py).
- Timeouts: ``connect_timeout`` to connect, ``timeout`` for each read or write
  (also between two chunks of a stream). Retries follow the openai SDK's rules
  (which failures, how many, how long to wait; a stream only before its first
  byte) under a deadline per call: see :mod:`providers.retries`.
- A run's cancel (its caller went away, its time is up, a shutdown) cuts its
  stream's connection at once, before the first byte too (``providers.cuttable``):
  a server that went silent, or has not begun to answer, does not hold the run's
  thread until the read timeout. A call so cut ends ``cancelled``, not failed.
- Streams ask for usage; a server that sends none (llama-cpp-python's) gives
  zero counts and ``usage_reported=False``: we do not guess token counts.
- Errors become provider errors with our codes; messages name the server's
  host, never the key (a server echoing the key has it masked).
- ``check_model`` makes no network call (it runs when an app is saved); only
  ``list_models`` (``GET /models``: ``GET /api/models``, a connection test) does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx

from appforge import __version__
from appforge.core.settings import OPENAI_BASE_URL, OpenAISettings, header_value_ok
from providers import cuttable
from providers.base import (
    ChatMessage,
    Completion,
    Delta,
    Generation,
    GenerationParams,
    Usage,
    is_cancelled,
    time_left,
    when_cancelled,
)
from providers.errors import (
    ContextWindowExceededError,
    ModelNotFoundError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
    server_message,
)
from providers.openai_answer import Answer, count_tokens
from providers.retries import Retries, send
from providers.sse import cut, event_data, finish_reading

logger = logging.getLogger(__name__)

# Sent to servers that need no key (some insist on a header); never to OpenAI itself.
_NO_KEY = "no-key"
_MAX_LISTED_MODELS = 200
# The openai SDK's pool: each running stream holds a connection.
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
_CHUNK_ERRORS = (ValueError, TypeError, AttributeError, LookupError)


@dataclass(frozen=True)
class Reachability:
    """What one bounded ``GET /models`` said about a server."""

    reachable: bool
    models: list[str] | None = None
    error: dict[str, str] | None = field(default=None)


class OpenAICompatProvider:
    """A :class:`~providers.base.Provider` for one OpenAI-compatible server."""

    def __init__(
        self,
        name: str,
        settings: OpenAISettings,
        *,
        key_env: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        """``key_env`` names an environment variable read when no key is configured;
        ``clock`` and ``sleep`` time the waits between retries (tests pass their own;
        by default a wait ends early when the run is cancelled)."""
        self.name = name
        self._settings = settings
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        if not key and key_env:
            key = os.environ.get(key_env) or None
        self._key = key
        self._key_env = key_env
        self._clock = clock
        self._sleep = sleep
        parts = urlsplit(settings.base_url)
        # Scheme, host and port only: user:password@ in a URL is a credential too.
        port = f":{parts.port}" if parts.port else ""
        self.server = f"{parts.scheme}://{parts.hostname or ''}{port}"
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    # -- configuration ------------------------------------------------------

    @property
    def has_key(self) -> bool:
        return bool(self._key)  # configured, or read from key_env

    @property
    def configured(self) -> bool:
        """Whether calls can be made: a key, or a server other than OpenAI's own."""
        return bool(self._key) or self._settings.base_url.rstrip("/") != OPENAI_BASE_URL

    def check_model(self, model: str) -> None:
        """Raise :class:`ModelNotFoundError` if this server is not configured. No network."""
        if not self.configured:
            where = (
                f"APPFORGE_{self.name.upper()}__API_KEY"
                if self.name == "openai"
                else ("api_key in APPFORGE_PROVIDERS")
            )
            also = f" or {self._key_env}" if self._key_env else ""
            raise ModelNotFoundError(
                f"The provider {self.name!r} has no API key for {self.server}: set "
                f"{where}{also}, or point its base_url at a server that needs none.",
                details={"provider": self.name, "model": model},
            )

    def _check_sendable(self) -> None:
        """Refuse (a ProviderError, not a crash in httpx) a key or header that HTTP cannot
        carry: settings and stored providers check theirs, but a key read from
        ``key_env`` or a provider stored by an older version is not checked there."""
        unsendable = [n for n, v in self._settings.headers.items() if not header_value_ok(v)]
        if self._key is not None and not header_value_ok(self._key):
            unsendable.append("the API key")
        if unsendable:
            raise ProviderError(
                f"The provider {self.name!r} cannot call {self.server}: "
                f"{', '.join(unsendable)} must be one line of printable ASCII. Set it again.",
                details={"provider": self.name},
            )

    def _http(self) -> httpx.Client:
        """The HTTP client (built once; it holds the connection pool)."""
        with self._client_lock:
            if self._client is None:
                self._check_sendable()
                self._client = httpx.Client(
                    base_url=self._settings.base_url,
                    headers={
                        "User-Agent": f"appforge/{__version__}",
                        **self._settings.headers,
                        "Authorization": f"Bearer {self._key or _NO_KEY}",
                    },
                    timeout=self._timeout(),
                    transport=cuttable.transport(_LIMITS),
                    follow_redirects=True,
                )
            return self._client

    def close(self) -> None:
        """Close the HTTP connection pool; the next call opens a new one."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self._settings.timeout, connect=self._settings.connect_timeout)

    def _retries(self, cancel: threading.Event | None) -> Retries:
        one_try = self._settings.connect_timeout + self._settings.timeout
        sleep = self._sleep or (cancel.wait if cancel is not None else time.sleep)
        retries = Retries.start(self._settings.max_retries, one_try, clock=self._clock, sleep=sleep)
        retries.cancel = cancel
        return retries

    # -- calls -----------------------------------------------------------------

    def _payload(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> dict[str, Any]:
        """The request body: the step's params over the model's configured defaults."""
        self.check_model(model)
        defaults = self._settings.model_params.get(model, {})
        payload: dict[str, Any] = {"model": model, "messages": messages}
        for name in ("temperature", "top_p", "max_tokens", "stop", "seed"):
            value = getattr(params, name)
            if value is None:
                value = defaults.get(name)
            if value is not None:
                payload[name] = value
        return payload

    def stream(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """The call as a :class:`Generation`: deltas, then one Completion (also when
        cancelled).

        ``cancel`` is checked between chunks; when set, or when the generation is
        closed, the HTTP stream is closed, which makes the server stop generating.
        """
        started = time.perf_counter()
        payload = self._payload(model, messages, params)
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        return Generation(self._pieces(model, payload, cancel, started))

    def _pieces(
        self,
        model: str,
        payload: dict[str, Any],
        cancel: threading.Event | None,
        started: float,
    ) -> Generator[Delta | Completion, None, None]:
        answer = Answer(model)
        stopped = partial(is_cancelled, cancel)
        # A call that fails before its first byte raises (the run says why it got no
        # answer), unless it failed because the run was cancelled: its wait for the
        # first byte is cut then (``providers.cuttable``).
        response = None
        if not stopped():
            try:
                response = self._send(
                    "POST", "chat/completions", model, payload, stream=True, cancel=cancel
                )
            except ProviderError:
                if not stopped():
                    raise
        ended = False
        if response is not None:
            forget = when_cancelled(cancel, lambda: cut(response))
            try:
                events = event_data(response.iter_bytes())
                while not stopped():
                    try:
                        data = self._next_event(events, model)
                    except ProviderError:
                        if stopped():  # we cut it mid-body
                            break
                        raise
                    if data is None and stopped():  # we cut a body ended by its connection
                        break
                    if data is None or data.startswith(b"[DONE]"):
                        ended = True
                        break
                    text = self._take(answer, data, model)
                    if text:
                        yield Delta(text)
            finally:
                forget()
                if ended:
                    finish_reading(events)
                response.close()
        if not ended and stopped():
            answer.finish_reason = "cancelled"
        yield self._finish(answer, started)

    def _next_event(self, events: Iterator[bytes], model: str) -> bytes | None:
        """The next event's data; None at the end of the stream."""
        try:
            return next(events, None)
        except httpx.TimeoutException as exc:
            why = f"no chunk within {self._settings.timeout:g} s"
            raise self._unavailable(model, why) from exc
        except httpx.TransportError as exc:
            raise self._unavailable(model, "the connection broke mid-stream") from exc
        except httpx.HTTPError as exc:
            raise self._error(exc, model, 0, self._settings.timeout) from exc

    def _take(self, answer: Answer, data: bytes, model: str) -> str | None:
        """Read one event's data into ``answer``; its text, if any."""
        try:
            chunk = json.loads(data)
            if chunk.get("error"):
                error = chunk["error"]
                said = error.get("message") if isinstance(error, dict) else error
                raise ProviderError(
                    f"The model server {self.server} failed: "
                    f"{self._mask(str(said or 'an error while streaming'))[:300]}",
                    details=self._details(model),
                )
            return answer.take(chunk)
        except _CHUNK_ERRORS as exc:
            shown = self._mask(data[:200].decode(errors="replace"))
            raise ProviderError(
                f"The model server {self.server} sent a stream chunk we cannot read: {shown}",
                details=self._details(model),
            ) from exc

    def complete(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> Completion:
        """The whole answer at once (a non-streamed request)."""
        started = time.perf_counter()
        payload = self._payload(model, messages, params)
        response = self._send("POST", "chat/completions", model, payload, stream=False)
        try:
            body = response.json()
            answer = Answer(body.get("model") or model)
            if isinstance(body.get("usage"), dict):
                answer.usage = body["usage"]
            if body.get("choices"):
                choice = body["choices"][0]
                answer.parts.append(choice["message"].get("content") or "")
                answer.finish_reason = choice.get("finish_reason") or "stop"
        except _CHUNK_ERRORS as exc:
            raise ProviderError(
                f"The model server {self.server} answered with no chat completion.",
                details=self._details(model),
            ) from exc
        answer.first_at = time.perf_counter()
        return self._finish(answer, started)

    def _finish(self, answer: Answer, started: float) -> Completion:
        finished = time.perf_counter()
        total_ms = (finished - started) * 1000
        ttft_ms = ((answer.first_at or finished) - started) * 1000
        usage = answer.usage or {}
        counts = Usage(
            prompt_tokens=count_tokens(usage.get("prompt_tokens")),
            completion_tokens=count_tokens(usage.get("completion_tokens")),
        )
        reported = answer.usage is not None
        logger.info(
            "llm call provider=%s model=%s finish=%s prompt_tokens=%d completion_tokens=%d "
            "usage_reported=%s ttft_ms=%.0f ms=%.0f",
            self.name,
            answer.model,
            answer.finish_reason,
            counts.prompt_tokens,
            counts.completion_tokens,
            reported,
            ttft_ms,
            total_ms,
        )
        return Completion(
            text="".join(answer.parts),
            usage=counts,
            model=answer.model,
            finish_reason=answer.finish_reason,
            timings={"ttft_ms": ttft_ms, "total_ms": total_ms},
            usage_reported=reported,
        )

    def _send(
        self,
        method: str,
        path: str,
        model: str,
        payload: dict[str, Any] | None,
        *,
        stream: bool,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> httpx.Response:
        """One call with retries (none when ``timeout`` bounds it, as for ``ping``), each
        wait and all the retries within the time the run of ``cancel`` has left, and
        none once it is cancelled; a failure becomes our error."""
        client = self._http()
        if timeout is None:
            limit, retries = self._timeout(), self._retries(cancel)
            left = time_left(cancel)
            if left is not None:  # the run ends first: no wait outlasts it
                left = max(left, 0.01)
                limit = httpx.Timeout(
                    min(self._settings.timeout, left), connect=min(limit.connect or left, left)
                )
                retries.deadline = min(retries.deadline, self._clock() + left)
        else:
            limit = httpx.Timeout(timeout)
            retries = Retries.start(0, timeout, clock=self._clock, sleep=self._sleep or time.sleep)
        accept = "text/event-stream" if stream else "application/json"
        request = client.build_request(
            method, path, json=payload, headers={"Accept": accept}, timeout=limit
        )
        try:
            with cuttable.cut_by(cancel):  # a cancel ends even the wait for the first byte
                return send(client, request, retries, stream=stream)
        except httpx.HTTPError as exc:
            waited = timeout if timeout is not None else self._settings.timeout
            raise self._error(exc, model, retries.taken, waited) from exc

    # -- reachability ------------------------------------------------------------

    def ping(self, timeout: float) -> Reachability:
        """``GET /models`` bounded by ``timeout`` seconds, without retries. Blocking."""
        if not self.configured:
            return Reachability(False, error={"code": "MODEL_NOT_FOUND", "message": "no API key"})
        try:
            return Reachability(True, models=self.list_models(timeout))
        except ProviderError as error:
            return Reachability(False, error={"code": error.code, "message": error.message})

    def list_models(self, timeout: float) -> list[str]:
        """The server's model ids (``GET /models``, at most 200), within ``timeout`` seconds
        and without retries; a ProviderError saying what failed otherwise. Blocking."""
        response = self._send("GET", "models", "", None, stream=False, timeout=timeout)
        try:
            listed = response.json()["data"][:_MAX_LISTED_MODELS]
            return [str(entry["id"]) for entry in listed]
        except _CHUNK_ERRORS:
            said = "no model list (is the base URL its /v1?)"
            message = f"The model server {self.server} answered GET /models with {said}."
            raise ProviderError(message, details=self._details("")) from None

    # -- errors -------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        if self._key and len(self._key) >= 4:
            text = text.replace(self._key, "***")
        return text

    def _details(self, model: str) -> dict[str, Any]:
        details: dict[str, Any] = {"provider": self.name, "server": self.server}
        if model:
            details["model"] = model
        return details

    def _unavailable(self, model: str, why: str) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            f"The model server {self.server} of provider {self.name!r} is unavailable: {why}.",
            details={"provider": self.name, "model": model, "server": self.server},
        )

    def _error(
        self, exc: httpx.HTTPError, model: str, retries: int, timeout: float
    ) -> ProviderError:
        """Our error for a failed call; the server's message is kept, with any key masked."""
        if isinstance(exc, httpx.TimeoutException):
            return self._unavailable(model, f"no answer within {timeout:g} s")
        if isinstance(exc, httpx.ConnectError):
            return self._unavailable(model, "cannot connect")
        if isinstance(exc, httpx.TransportError):
            return self._unavailable(model, f"the connection failed ({type(exc).__name__})")
        if not isinstance(exc, httpx.HTTPStatusError):
            return ProviderError(
                f"The model server {self.server} failed: {self._mask(str(exc))[:300]}",
                details=self._details(model),
            )
        return self._status_error(exc.response, model, retries)

    def _status_error(self, response: httpx.Response, model: str, retries: int) -> ProviderError:
        status = response.status_code
        details = {**self._details(model), "status": status}
        said = self._mask(server_message(response))
        after = f" after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
        if status in (401, 403):
            return ProviderAuthError(
                f"The model server {self.server} refused our credentials ({status}); check "
                f"the API key of provider {self.name!r}.",
                details=details,
            )
        if status == 429:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                details["retry_after"] = retry_after
            return ProviderRateLimitedError(
                f"The model server {self.server} is rate limiting us (429){after}: {said}",
                details=details,
            )
        if status == 404:
            return ModelNotFoundError(
                f"The model server {self.server} has no model {model!r} (404): {said}",
                details=details,
            )
        if status == 400 and "context" in said.lower() and "length" in said.lower():
            return ContextWindowExceededError(
                f"The prompt does not fit the context window of {model!r}: {said}",
                details=details,
            )
        if status >= 500:
            return ProviderUnavailableError(
                f"The model server {self.server} failed ({status}){after}: {said}",
                details=details,
            )
        return ProviderError(
            f"The model server {self.server} refused the request ({status}){after}: {said}",
            details=details,
        )
