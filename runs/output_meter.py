"""A run's output size against ``limits.max_output_bytes``: the run service stops a
run whose output grows past it (``OUTPUT_TOO_LARGE``, keeping what came before)."""

from __future__ import annotations

import json

from apps_yaml.events import Chunk, Failed, Output


class OutputMeter:
    """Adds up a run's output (UTF-8 bytes of its chunks, JSON size of whole values)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0

    def fits(self, event: Chunk | Output) -> bool:
        if isinstance(event, Chunk):
            self.size += len(event.text.encode("utf-8", "replace"))
        else:
            self.size += len(json.dumps(event.value, default=str).encode("utf-8", "replace"))
        return self.size <= self.limit

    def failure(self) -> Failed:
        return Failed(
            "OUTPUT_TOO_LARGE",
            f"the run's output is larger than {self.limit} bytes "
            "(APPFORGE_LIMITS__MAX_OUTPUT_BYTES); what came before is kept",
            None,
            422,
        )
