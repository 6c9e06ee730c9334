"""Encoders for streamed runs: NDJSON lines (default) and Server-Sent Events.

Both carry the same JSON objects: chunks shaped like the non-streamed body
(``{"session": {...}, "output": {key: chunk}}``), then a final
``{"session", "run", "done": true}`` or an error body.
"""

from __future__ import annotations

import json
from typing import Any

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class Encoder:
    """Turns chunk/done/error objects into the bytes of one stream format."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.media_type = SSE if sse else NDJSON
        self._n = 0

    def encode(self, event: str, obj: dict[str, Any]) -> bytes:
        """``event`` is ``chunk``, ``done`` or ``error`` (used by SSE only)."""
        if not self.sse:
            return (_dumps(obj) + "\n").encode()
        self._n += 1
        return f"id: {self._n}\nevent: {event}\ndata: {_dumps(obj)}\n\n".encode()


def wants_sse(accept: str) -> bool:
    return SSE in accept.lower()
