"""Retries of HTTP calls to model servers: the openai SDK's rules, under a deadline.

Which failures are retried, as the openai SDK decides:

- a connection error or a timeout (the server never answered);
- an answer whose ``x-should-retry`` header is ``true``, whatever its status, and
  never one whose header is ``false``;
- otherwise an answer with status 408 (request timeout), 409 (lock conflict),
  429 (rate limit) or any 5xx;
- but never an answer whose ``retry-after`` asks for more than
  :data:`MAX_RETRY_AFTER` seconds (120, or an infinite wait): the server will
  not be ready soon, and failing now beats holding a run that long.

The wait before retry number ``n`` (0 for the first):

- the server's own wait when it gives one over 0 and at most 120 s:
  ``retry-after-ms`` (milliseconds) first, else ``retry-after`` in seconds
  (fractions allowed) or as an HTTP date;
- otherwise exponential backoff, 0.5 s doubling each retry and capped at 8 s,
  less a random 0-25 % so clients that failed together do not retry together:
  0.375-0.5 s, then 0.75-1 s, 1.5-2 s, 3-4 s, 6-8 s, 6-8 s...

A run's cancel (its caller left, its time is up) ends the wait before a retry
at once and makes no more tries: the last failure is raised.

How many: at most ``max_retries``, within a deadline per call (our addition;
the SDK has none). The deadline is ``(max_retries + 1) × try_seconds`` after the
first try starts, where ``try_seconds`` is what one try may take (the
provider's connect timeout plus its read timeout): the time the configured
tries could take on their own. A retry is made only if its wait and one whole
try still fit before the deadline, so long server-directed waits (a
``retry-after`` of 120 s with ``max_retries=10``) cannot stretch a call to
minutes; the last failure is raised at once instead of after a wait that
could not help.

A stream is retried only before its first byte: once an answer under 400 is
accepted, a failure while reading it is raised, never retried (the caller may
have passed part of it on). A non-streamed answer is read whole inside its try,
so a connection that breaks mid-body is retried, as with the SDK.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx

from providers.sse import AnswerTooLarge

logger = logging.getLogger(__name__)

INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
MAX_RETRY_AFTER = 120.0
RETRIED_STATUSES = frozenset({408, 409, 429})


def server_wait(headers: httpx.Headers, now: float) -> float | None:
    """Seconds the server asks us to wait, or None when it does not say (or says nonsense).

    ``retry-after-ms`` wins over ``retry-after``; ``retry-after`` is seconds or an
    HTTP date, which ``now`` (a Unix time) turns into seconds. May be negative
    (a date in the past) or infinite.
    """
    for name, seconds_per_unit in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            wait = float(value)
        except ValueError:
            continue
        if math.isnan(wait):
            return None
        return wait * seconds_per_unit
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": a UTC time from a sender that does not know its zone
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def is_retried(status: int, headers: httpx.Headers, now: float) -> bool:
    """Whether an answer with this status and these headers is worth another try."""
    wait = server_wait(headers, now)
    if wait is not None and wait > MAX_RETRY_AFTER:
        return False
    said = headers.get("x-should-retry")
    if said == "true":
        return True
    if said == "false":
        return False
    return status in RETRIED_STATUSES or status >= 500


def backoff(retries_taken: int, draw: Callable[[], float] = random.random) -> float:
    """The wait before retry number ``retries_taken`` when the server named none."""
    full = min(INITIAL_DELAY * 2.0 ** min(retries_taken, 32), MAX_DELAY)
    return full * (1 - 0.25 * draw())


def wait_before(retries_taken: int, headers: httpx.Headers | None, now: float) -> float:
    """The wait before retry number ``retries_taken``: the server's, if usable, else backoff."""
    wait = server_wait(headers, now) if headers is not None else None
    if wait is not None and 0 < wait <= MAX_RETRY_AFTER:
        return wait
    return backoff(retries_taken)


@dataclass
class Retries:
    """The retries of one call: how many were made, and until when more may be."""

    max_retries: int
    try_seconds: float
    deadline: float
    clock: Callable[[], float]
    sleep: Callable[[float], object]
    taken: int = 0
    cancel: threading.Event | None = None  # set: no more tries

    @classmethod
    def start(
        cls,
        max_retries: int,
        try_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> Retries:
        """The retries of a call starting now, its deadline set by the rule above."""
        deadline = clock() + (max_retries + 1) * try_seconds
        return cls(max_retries, try_seconds, deadline, clock, sleep)

    def next_wait(self, headers: httpx.Headers | None) -> float | None:
        """The wait before one more try, or None when none is left or it would miss the
        deadline. ``headers`` are the failed answer's (None: no answer at all)."""
        if self.taken >= self.max_retries or self.cancelled():
            return None
        wait = wait_before(self.taken, headers, time.time())
        if self.clock() + wait + self.try_seconds > self.deadline:
            logger.debug("not retrying: a wait of %.2f s and a try would pass the deadline", wait)
            return None
        return wait

    def again(self, headers: httpx.Headers | None) -> bool:
        """Wait and return True when one more try may be made; else return False at once."""
        wait = self.next_wait(headers)
        return wait is not None and self.pause(wait)

    def pause(self, wait: float) -> bool:
        """Wait before the next try (after the failed answer was released); False if
        the call was cancelled meanwhile (no try then)."""
        self.taken += 1
        logger.debug("retry %d of %d in %.2f s", self.taken, self.max_retries, wait)
        self.sleep(wait)
        return not self.cancelled()

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def send(
    client: httpx.Client, request: httpx.Request, retries: Retries, *, stream: bool
) -> httpx.Response:
    """Send ``request`` until an answer under 400 is accepted, retrying as the rules say.

    With ``stream`` the answer is returned once its headers are in (the caller reads
    and closes it); without, its body is read within the try. When no retry is
    left, raises the last :class:`httpx.TransportError`, or an
    :class:`httpx.HTTPStatusError` whose response body has been read (or is empty).
    """
    while True:
        try:
            response = client.send(request, stream=True)
        except httpx.TransportError:
            if not retries.again(None):
                raise
            continue
        if response.status_code < 400:
            if stream:
                return response
            try:
                return read_within(response, MAX_BODY_BYTES)
            except httpx.HTTPError as exc:
                response.close()
                if isinstance(exc, httpx.TransportError) and retries.again(None):
                    continue
                raise
        wait = None
        if is_retried(response.status_code, response.headers, time.time()):
            wait = retries.next_wait(response.headers)
        if wait is None:
            raise httpx.HTTPStatusError(
                f"status {response.status_code}", request=request, response=_read_quietly(response)
            )
        answer = _read_quietly(response)  # the connection goes back to the pool while we wait
        if not retries.pause(wait):
            raise httpx.HTTPStatusError(
                f"status {response.status_code}", request=request, response=answer
            )


# The largest body read from a model server: a whole (not streamed) chat completion or
# model list; and the part of an error answer read for its message.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024


# Headers that describe the body as it came, not as read (decompressed, whole).
_OF_THE_WIRE = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def read_within(response: httpx.Response, most: int) -> httpx.Response:
    """``response`` with its body read, at most ``most`` bytes of it (decompressed):
    a copy holding the body, the connection released. Larger: AnswerTooLarge, the
    connection closed."""
    parts: list[bytes] = []
    size = 0
    for part in response.iter_bytes():
        size += len(part)
        if size > most:
            response.close()
            raise AnswerTooLarge(f"the model server's answer is larger than {most} bytes")
        parts.append(part)
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in _OF_THE_WIRE]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(parts),
        request=response.request,
        extensions=response.extensions,
    )


def _read_quietly(response: httpx.Response) -> httpx.Response:
    """An error answer with its body read for its message (the first MAX_ERROR_BYTES
    of it); a body that breaks off, or a longer one, is not kept."""
    try:
        return read_within(response, MAX_ERROR_BYTES)
    except httpx.HTTPError:
        response.close()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            request=response.request,
            extensions=response.extensions,
        )
