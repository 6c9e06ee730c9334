"""The one interface every LLM provider implements.

A provider turns a list of chat messages and sampling parameters into a
:class:`Generation`: text deltas, then one :class:`Completion` carrying the
token usage. Calls are blocking: callers run them in a worker thread. A
``cancel`` event lets the caller stop generation early (client disconnected).
A run's event is a :class:`Cancel`: it carries the run's deadline, which a
provider waiting on a server bounds each wait by (:func:`time_left`), and it
calls back what a provider registered when it is set (:func:`when_cancelled`),
so a provider blocked on a silent server stops waiting at once: neither a
cancelled run nor one past its time limit holds its thread.

A generation holds resources while it runs (the local model's lock, an HTTP
stream), so it is a context manager: leaving the ``with`` block ends it and
releases them, whether the deltas were all read or not::

    with provider.stream(model, messages, params, cancel) as generation:
        for delta in generation:
            send(delta.text)
    completion = generation.result()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Literal, Protocol, TypedDict

from appforge.core.values import storable_text

log = logging.getLogger(__name__)


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerationParams:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Delta:
    """A piece of generated text."""

    text: str


@dataclass(frozen=True)
class Completion:
    """The end of a generation: the whole text, usage and why it stopped."""

    text: str
    usage: Usage
    model: str
    finish_reason: str = "stop"
    timings: dict[str, float] = field(default_factory=dict)
    # False when the backend sent no token counts (some servers' streams): usage is 0 then.
    usage_reported: bool = True

    @property
    def ttft_ms(self) -> float | None:
        """Milliseconds from the call to its first text (measured once, by the provider)."""
        return self.timings.get("ttft_ms")


class Generation:
    """One model call in progress: iterate for its deltas, then :meth:`result`.

    ``pieces`` is the provider's generator: deltas, then exactly one Completion.
    Closing the generation (leaving its ``with`` block, or :meth:`close`) closes
    that generator, so the provider stops and releases what it holds at once,
    however far the consumer read.
    """

    def __init__(self, pieces: Generator[Delta | Completion, None, None]) -> None:
        self._pieces = pieces
        self._completion: Completion | None = None

    def __iter__(self) -> Iterator[Delta]:
        # A model server may send a NUL or a lone surrogate ("\\ud800" is valid JSON):
        # dropped here, for every provider, as nothing could store or send them on.
        for item in self._pieces:
            if isinstance(item, Completion):
                self._completion = replace(item, text=storable_text(item.text))
            else:
                text = storable_text(item.text)
                yield item if text is item.text else Delta(text)

    def result(self) -> Completion:
        """The completion: after the deltas were read, or reading (and dropping) the rest."""
        if self._completion is None:
            for _ in self:
                pass
        if self._completion is None:
            raise RuntimeError("the provider's stream ended without a completion")
        return self._completion

    def close(self) -> None:
        """End the call now (the provider stops generating and frees its resources)."""
        self._pieces.close()

    def __enter__(self) -> Generation:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Provider(Protocol):
    """A model backend. ``model`` is the provider-specific model name."""

    name: str

    def stream(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """The call as a :class:`Generation`: deltas, then one Completion (also when
        cancelled). Use it in a ``with`` block."""
        ...

    def complete(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> Completion:
        """The whole answer at once."""
        ...


class Cancel(threading.Event):
    """A run's cancel event: set when the run must stop (the caller went away or
    cancelled it, its time is up, its output is too big).

    It carries the run's deadline (a ``time.monotonic()`` time, or None), and calls
    each callback registered with :meth:`when_set` once, when it is set (at once if
    it already is). Callbacks run under the event's lock, so once the function
    :meth:`when_set` returned has been called, its callback is not running and
    never will: what it touches may then be closed. A callback must be quick."""

    def __init__(self, deadline: float | None = None) -> None:
        super().__init__()
        self.deadline = deadline
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._lock = threading.RLock()

    def set(self) -> None:
        with self._lock:
            super().set()
            callbacks, self._callbacks = list(self._callbacks.values()), {}
            for callback in callbacks:
                _call(callback)

    def when_set(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when this is set; the returned function unregisters it."""
        with self._lock:
            if self.is_set():
                _call(callback)
                return lambda: None
            key, self._next = self._next, self._next + 1
            self._callbacks[key] = callback
        return lambda: self._forget(key)

    def _forget(self, key: int) -> None:
        with self._lock:
            self._callbacks.pop(key, None)


def _call(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # one failing callback must not keep the others from running
        log.exception("a cancel callback failed")


def is_cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


def time_left(cancel: threading.Event | None) -> float | None:
    """Seconds until the deadline of a run's :class:`Cancel` (0 once past), or None if
    there is none."""
    at = cancel.deadline if isinstance(cancel, Cancel) else None
    return None if at is None else max(0.0, at - time.monotonic())


def when_cancelled(
    cancel: threading.Event | None, callback: Callable[[], None]
) -> Callable[[], None]:
    """Call ``callback`` when a run's :class:`Cancel` is set (a plain event cannot say);
    the returned function unregisters it."""
    if isinstance(cancel, Cancel):
        return cancel.when_set(callback)
    return lambda: None
