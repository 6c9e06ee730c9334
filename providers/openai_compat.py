"""Any OpenAI-compatible chat server, through the official ``openai`` SDK.

One provider instance talks to one server (OpenAI, vLLM, Ollama, llama.cpp
server, LM Studio): the ``openai`` section of the settings, or a named entry of
``APPFORGE_PROVIDERS``. Model names are passed to the server as they are.

- Timeouts and retries are the SDK's: ``max_retries`` retries connection
  errors, 408/409/429 and 5xx with exponential backoff, honouring the server's
  ``Retry-After`` (or ``retry-after-ms``) up to two minutes.
- Streams ask for usage (``stream_options.include_usage``). A server that does
  not send it (llama-cpp-python's server) gives a Completion with zero counts
  and ``usage_reported=False``: we do not guess token counts.
- Errors become provider errors with our codes; messages name the server's
  host, never the key (a server echoing the key has it masked).
- ``check_model`` makes no network call (it runs when an app is saved); only
  ``ping`` (``GET /models``, for ``GET /api/models``) does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import openai

from appforge.core.settings import OPENAI_BASE_URL, OpenAISettings
from providers.base import ChatMessage, Completion, Delta, Generation, GenerationParams, Usage
from providers.errors import (
    ContextWindowExceededError,
    ModelNotFoundError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)

logger = logging.getLogger(__name__)

# Sent to servers that need no key (the SDK insists on one); never to OpenAI itself.
_NO_KEY = "no-key"
_MAX_LISTED_MODELS = 200


@dataclass(frozen=True)
class Reachability:
    """What one bounded ``GET /models`` said about a server."""

    reachable: bool
    models: list[str] | None = None
    error: dict[str, str] | None = field(default=None)


class OpenAICompatProvider:
    """A :class:`~providers.base.Provider` for one OpenAI-compatible server."""

    def __init__(self, name: str, settings: OpenAISettings, *, key_env: str | None = None) -> None:
        """``key_env`` names an environment variable read when no key is configured."""
        self.name = name
        self._settings = settings
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        if not key and key_env:
            key = os.environ.get(key_env) or None
        self._key = key
        self._key_env = key_env
        parts = urlsplit(settings.base_url)
        # Scheme, host and port only: user:password@ in a URL is a credential too.
        port = f":{parts.port}" if parts.port else ""
        self.server = f"{parts.scheme}://{parts.hostname or ''}{port}"
        self._client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()

    # -- configuration ------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._settings.base_url

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

    def client(self) -> openai.OpenAI:
        """The SDK client (built once; it holds the HTTP connection pool)."""
        with self._client_lock:
            if self._client is None:
                self._client = openai.OpenAI(
                    api_key=self._key or _NO_KEY,
                    base_url=self._settings.base_url,
                    timeout=openai.Timeout(
                        self._settings.timeout, connect=self._settings.connect_timeout
                    ),
                    max_retries=self._settings.max_retries,
                )
            return self._client

    def close(self) -> None:
        """Close the HTTP connection pool; the next call opens a new one."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- calls -----------------------------------------------------------------

    def _request(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> dict[str, Any]:
        """The create() arguments: the step's params over the model's configured defaults."""
        self.check_model(model)
        defaults = self._settings.model_params.get(model, {})
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        for name in ("temperature", "top_p", "max_tokens", "stop", "seed"):
            value = getattr(params, name)
            if value is None:
                value = defaults.get(name)
            if value is not None:
                kwargs[name] = value
        return kwargs

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
        kwargs = self._request(model, messages, params)
        return Generation(self._pieces(model, kwargs, cancel, started))

    def _pieces(
        self,
        model: str,
        kwargs: dict[str, Any],
        cancel: threading.Event | None,
        started: float,
    ) -> Generator[Delta | Completion, None, None]:
        if cancel is not None and cancel.is_set():
            yield self._finish(model, [], None, "cancelled", started, None)
            return
        try:
            response = self.client().chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}
            )
        except openai.OpenAIError as exc:
            raise self._error(exc, model) from exc
        parts: list[str] = []
        usage: Any = None
        finish_reason = "stop"
        served = model
        first_at: float | None = None
        try:
            chunks = iter(response)
            while True:
                if cancel is not None and cancel.is_set():
                    finish_reason = "cancelled"
                    break
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except openai.OpenAIError as exc:  # the SDK wraps transport errors too
                    raise self._error(exc, model) from exc
                served = chunk.model or served
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = choice.delta.content if choice.delta is not None else None
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
                if text:
                    if first_at is None:
                        first_at = time.perf_counter()
                    parts.append(text)
                    yield Delta(text)
        finally:
            response.close()
        yield self._finish(served, parts, usage, finish_reason, started, first_at)

    def complete(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> Completion:
        """The whole answer at once (a non-streamed request)."""
        started = time.perf_counter()
        kwargs = self._request(model, messages, params)
        try:
            response = self.client().chat.completions.create(**kwargs)
        except openai.OpenAIError as exc:
            raise self._error(exc, model) from exc
        text, finish_reason = "", "stop"
        if response.choices:
            choice = response.choices[0]
            text = choice.message.content or ""
            finish_reason = choice.finish_reason or "stop"
        done = time.perf_counter()
        return self._finish(
            response.model or model, [text], response.usage, finish_reason, started, done
        )

    def _finish(
        self,
        model: str,
        parts: list[str],
        usage: Any,
        finish_reason: str,
        started: float,
        first_at: float | None,
    ) -> Completion:
        finished = time.perf_counter()
        total_ms = (finished - started) * 1000
        ttft_ms = ((first_at or finished) - started) * 1000
        reported = usage is not None
        counts = Usage(
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )
        logger.info(
            "llm call provider=%s model=%s finish=%s prompt_tokens=%d completion_tokens=%d "
            "usage_reported=%s ttft_ms=%.0f ms=%.0f",
            self.name,
            model,
            finish_reason,
            counts.prompt_tokens,
            counts.completion_tokens,
            reported,
            ttft_ms,
            total_ms,
        )
        return Completion(
            text="".join(parts),
            usage=counts,
            model=model,
            finish_reason=finish_reason,
            timings={"ttft_ms": ttft_ms, "total_ms": total_ms},
            usage_reported=reported,
        )

    # -- reachability ------------------------------------------------------------

    def ping(self, timeout: float) -> Reachability:
        """``GET /models`` bounded by ``timeout`` seconds, without retries. Blocking."""
        if not self.configured:
            return Reachability(False, error={"code": "MODEL_NOT_FOUND", "message": "no API key"})
        try:
            page = self.client().with_options(timeout=timeout, max_retries=0).models.list()
            models = [m.id for m in page.data[:_MAX_LISTED_MODELS]]
        except openai.OpenAIError as exc:
            error = self._error(exc, "")
            return Reachability(False, error={"code": error.code, "message": error.message})
        return Reachability(True, models=models)

    # -- errors -------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        if self._key and len(self._key) >= 4:
            text = text.replace(self._key, "***")
        return text

    def _unavailable(self, model: str, why: str) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            f"The model server {self.server} of provider {self.name!r} is unavailable: {why}.",
            details={"provider": self.name, "model": model, "server": self.server},
        )

    def _error(self, exc: openai.OpenAIError, model: str) -> ProviderError:
        """Our error for an SDK error; the server's message is kept, with any key masked."""
        details: dict[str, Any] = {"provider": self.name, "server": self.server}
        if model:
            details["model"] = model
        if isinstance(exc, openai.APITimeoutError):
            return self._unavailable(model, f"no answer within {self._settings.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            return self._unavailable(model, "cannot connect")
        if not isinstance(exc, openai.APIStatusError):
            return ProviderError(
                f"The model server {self.server} failed: {self._mask(_server_message(exc))}",
                details=details,
            )
        status = exc.status_code
        details["status"] = status
        said = self._mask(_server_message(exc))
        if status in (401, 403):
            return ProviderAuthError(
                f"The model server {self.server} refused our credentials ({status}); check "
                f"the API key of provider {self.name!r}.",
                details=details,
            )
        if status == 429:
            retry_after = exc.response.headers.get("retry-after")
            if retry_after:
                details["retry_after"] = retry_after
            return ProviderRateLimitedError(
                f"The model server {self.server} is rate limiting us (429) after "
                f"{self._settings.max_retries} retries: {said}",
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
                f"The model server {self.server} failed ({status}) after "
                f"{self._settings.max_retries} retries: {said}",
                details=details,
            )
        return ProviderError(
            f"The model server {self.server} refused the request ({status}): {said}",
            details=details,
        )


def _server_message(exc: openai.OpenAIError) -> str:
    """The server's own error message (OpenAI's ``{"error": {"message"}}``), bounded."""
    body = getattr(exc, "body", None)
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message is None and isinstance(body.get("detail"), str):
            message = body["detail"]
    text = str(message) if message else (getattr(exc, "message", None) or str(exc))
    return text[:300]
