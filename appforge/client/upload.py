"""A file sent as ``multipart/form-data`` in pieces: the body is never whole in memory.

The body is the form's text fields, then the file read 1 MiB at a time from a
path, an open (seekable) binary file from where it stands, or bytes, then the
closing boundary. Its length is
known in advance (sent as ``Content-Length``, so the server can refuse a file
over its limit before reading it), and each send reads the file anew, so a
request retried after a 429 sends the same bytes again.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PIECE = 1024 * 1024

# What an upload reads its file from.
FileSource = Path | bytes | BinaryIO


def _quoted(value: str) -> str:
    """A Content-Disposition parameter value (as browsers and httpx write them)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


class MultipartBody:
    """The body of one upload: ``fields`` (text), then ``file`` under ``field``."""

    def __init__(
        self,
        source: FileSource,
        *,
        field: str,
        filename: str,
        media_type: str,
        fields: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self._start = 0 if isinstance(source, Path | bytes) else source.tell()
        boundary = secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={boundary}"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"'
            f"\r\n\r\n{value}\r\n"
            for name, value in (fields or {}).items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(field)}"; '
            f'filename="{_quoted(filename)}"\r\nContent-Type: {media_type}\r\n\r\n'
        )
        self._head = "".join(parts).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()

    def _file_size(self) -> int:
        if isinstance(self.source, Path):
            return self.source.stat().st_size
        if isinstance(self.source, bytes):
            return len(self.source)
        end = self.source.seek(0, io.SEEK_END)
        self.source.seek(self._start)
        return end - self._start

    def length(self) -> int:
        """The body's length in bytes."""
        return len(self._head) + self._file_size() + len(self._tail)

    @contextmanager
    def _opened(self) -> Iterator[BinaryIO]:
        """The file, at its start (a path is opened, and closed after)."""
        if isinstance(self.source, Path):
            with self.source.open("rb") as file:
                yield file
        elif isinstance(self.source, bytes):
            yield io.BytesIO(self.source)
        else:
            self.source.seek(self._start)
            yield self.source

    def pieces(self) -> Iterator[bytes]:
        """The body in pieces (reads the file from its start)."""
        yield self._head
        with self._opened() as file:
            while piece := file.read(PIECE):
                yield piece
        yield self._tail

    async def apieces(self) -> AsyncIterator[bytes]:
        """The body in pieces for an async client; file reads run in a thread."""
        yield self._head
        with self._opened() as file:
            while piece := await asyncio.to_thread(file.read, PIECE):
                yield piece
        yield self._tail

    def sha256(self) -> str:
        """The hex SHA-256 of the body (for signed requests): one pass over the file."""
        digest = hashlib.sha256()
        for piece in self.pieces():
            digest.update(piece)
        return digest.hexdigest()
