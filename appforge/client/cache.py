"""The prompt cache: answers of prompt reads kept, so an app reading its prompts is
fast and keeps working while the server is briefly unreachable.

An answer is fresh for ``ttl`` seconds of ``clock`` (``time.monotonic`` unless a
test hands over its own clock); after that the server is asked again, and the kept
answer is served only if the server cannot answer (stale-if-error). A prompt write
through the same client makes every kept answer stale at once, so a client sees its
own changes; the stale answers stay as fallbacks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import httpx


class PromptCache:
    """Kept answers by request key, each with the ``clock`` time it arrived."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._kept: dict[str, tuple[float, httpx.Response]] = {}

    def fresh(self, key: str) -> httpx.Response | None:
        """The kept answer if it is younger than ``ttl``."""
        kept = self._kept.get(key)
        if kept is not None and self.clock() - kept[0] < self.ttl:
            return kept[1]
        return None

    def keep(self, key: str, response: httpx.Response) -> None:
        """Keep an answer (nothing is kept when ``ttl`` is 0: the cache is off)."""
        if self.ttl > 0:
            self._kept[key] = (self.clock(), response)

    def last(self, key: str) -> httpx.Response | None:
        """The last answer kept, however old (for when the server cannot answer)."""
        kept = self._kept.get(key)
        return kept[1] if kept is not None else None

    def expire(self) -> None:
        """Make every kept answer stale; they stay as fallbacks."""
        self._kept = {key: (-math.inf, response) for key, (_, response) in self._kept.items()}
