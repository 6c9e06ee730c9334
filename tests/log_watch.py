"""No token or secret reaches a log, over the whole test run.

Every test that creates tokens, signing secrets and builder sessions (in this
process, or in an ``appforge serve`` it starts) runs under this watch, so it
covers far more than one test's own calls:

- every log record made in this process at INFO or above (the product's default
  level), as its message and traceback are before any formatter masks them: the
  product must not hand a secret to a logger at all;
- every ``*.log`` file the tests' servers wrote under the run's temporary folder,
  and the output of the servers that write elsewhere (``check_output``), as the
  product formatted it: what an operator would read.

A finding names the logger or file and the secret's first characters only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from appforge.core.logs import SECRET_SHAPE

# Logs of servers that are not ours (the llama.cpp server standing in for a provider).
FOREIGN_LOGS = ("llama_server",)


def _shown(secret: str) -> str:
    return secret[:6] + "..."


class LogWatch(logging.Handler):
    """A root handler that notes every secret-shaped value in a record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.found: list[str] = []
        self._traceback = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is the test's own problem
            return
        if record.exc_info:
            text += self._traceback.formatException(record.exc_info)
        for match in SECRET_SHAPE.finditer(text):
            self.found.append(f"log record {record.name}: {_shown(match.group())}")

    def start(self) -> int:
        """Watch the root logger (at INFO at least); the root's level before."""
        root = logging.getLogger()
        before = root.level
        root.addHandler(self)
        if root.level > logging.INFO:
            root.setLevel(logging.INFO)
        return before

    def stop(self, level: int) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(level)


# Findings in server output that never reaches a file under the temporary folder (an
# unnamed temporary file, a pipe): the tests hand it to :func:`check_output`.
OUTPUT_FOUND: list[str] = []


def check_output(label: str, text: str) -> None:
    """Note any secret-shaped value in a server's output (as it was formatted)."""
    for match in SECRET_SHAPE.finditer(text):
        OUTPUT_FOUND.append(f"{label}: {_shown(match.group())}")


def log_files(folder: Path) -> list[str]:
    """Secret-shaped values in the ``*.log`` files under ``folder``."""
    found = []
    for path in sorted(folder.rglob("*.log")):
        if any(part.startswith(FOREIGN_LOGS) for part in path.parts):
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(SECRET_SHAPE, text):
            found.append(f"{path.relative_to(folder)}: {_shown(match.group())}")
    return found
