"""``entry_data.file`` as plain base64 or a data URI that names the file."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote

from datasources.errors import EntryInvalidError, EntryTooLargeError


@dataclass(frozen=True)
class FileData:
    """``entry_data.file`` decoded: the bytes, and what a data URI said about them."""

    data: bytes
    media_type: str | None = None
    name: str | None = None


def decode_file(value: str, limit: int) -> FileData:
    """Plain base64, or a data URI ``data:<media type>[;name=<file name>];base64,<data>``
    (parameters may come in any order; the name may be percent-encoded)."""
    media_type: str | None = None
    name: str | None = None
    if value.startswith("data:"):
        header, comma, value = value[5:].partition(",")
        params = header.split(";")
        if not comma or "base64" not in params[1:]:
            raise EntryInvalidError("entry_data.file: a data URI must be base64 (;base64,)")
        media_type = params[0].strip() or None
        for param in params[1:]:
            key, _, raw = param.partition("=")
            if key.strip().lower() in ("name", "filename") and raw:
                name = unquote(raw.strip().strip('"'))[:500] or None
        if media_type is not None and len(media_type) > 200:
            raise EntryInvalidError("entry_data.file: the media type is too long")
    if len(value) > (limit + 2) // 3 * 4 + 4:
        raise EntryTooLargeError(f"the file is over the limit of {limit} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EntryInvalidError("entry_data.file is not valid base64") from exc
    return FileData(data, media_type, name)
