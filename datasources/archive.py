"""Zip archives (DOCX) checked before a parser expands them: the zip-bomb guard.

A DOCX is a zip; python-docx reads every member into memory and parses its XML
whole, so 150 KB of compressed paragraphs can become gigabytes. Before that,
:func:`check_zip` refuses (``ARCHIVE_TOO_LARGE``) an archive with

- more members than ``max_archive_members`` (counted from the end record, before
  the central directory is even read);
- a member, or all members together, declaring more than
  ``max_uncompressed_bytes``;
- a member over 1 MiB that expands more than ``max_compression_ratio`` times;

and then decompresses every member in 64 KiB steps, counting what actually comes
out, so a member that lies about its size is stopped at the same limit. Nothing
but one step's output is held in memory while checking.
"""

from __future__ import annotations

import io
import zipfile

from appforge.core.settings import DatasourceSettings
from datasources.errors import ArchiveTooLargeError

_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_MAX_COMMENT = 65535
_RATIO_FLOOR = 1024 * 1024  # small members may compress well without being a bomb
_STEP = 64 * 1024


def declared_members(data: bytes) -> int | None:
    """The member count of the zip's end record (None: no end record found)."""
    tail = data[-(_END_RECORD_SIZE + _MAX_COMMENT) :]
    at = tail.rfind(_END_RECORD)
    if at < 0 or len(tail) - at < _END_RECORD_SIZE:
        return None
    # Total entries in the central directory: 2 bytes at offset 10. 0xFFFF means "see the
    # zip64 record": more than any limit we allow, so it is refused as too many.
    return int.from_bytes(tail[at + 10 : at + 12], "little")


def check_members(data: bytes, settings: DatasourceSettings) -> None:
    """Refuse an archive that declares more members than allowed, before opening it."""
    count = declared_members(data)
    if count is not None and count > settings.max_archive_members:
        raise ArchiveTooLargeError(
            f"the archive has {count} members; the limit is {settings.max_archive_members} "
            "(APPFORGE_DATASOURCES__MAX_ARCHIVE_MEMBERS)",
            details={"members": count, "limit": settings.max_archive_members},
        )


def check_zip(data: bytes, settings: DatasourceSettings) -> None:
    """Raise :class:`ArchiveTooLargeError` unless the zip expands within the limits."""
    check_members(data, settings)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        if len(infos) > settings.max_archive_members:
            raise ArchiveTooLargeError(
                f"the archive has {len(infos)} members; the limit is "
                f"{settings.max_archive_members} (APPFORGE_DATASOURCES__MAX_ARCHIVE_MEMBERS)"
            )
        for info in infos:
            _check_declared(info, settings)
        _check_total(sum(info.file_size for info in infos), settings.max_uncompressed_bytes)
        total = 0
        for info in infos:
            total = _read_counting(archive, info, total, settings.max_uncompressed_bytes)


def _check_declared(info: zipfile.ZipInfo, settings: DatasourceSettings) -> None:
    limit = settings.max_uncompressed_bytes
    if info.file_size > limit:
        raise ArchiveTooLargeError(
            f"the archive member {info.filename!r} expands to {info.file_size} bytes; the "
            f"limit is {limit} (APPFORGE_DATASOURCES__MAX_UNCOMPRESSED_BYTES)",
            details={"member": info.filename, "size": info.file_size, "limit": limit},
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_FLOOR and ratio > settings.max_compression_ratio:
        raise ArchiveTooLargeError(
            f"the archive member {info.filename!r} expands {ratio:.0f} times; the limit is "
            f"{settings.max_compression_ratio:g} (APPFORGE_DATASOURCES__MAX_COMPRESSION_RATIO)",
            details={"member": info.filename, "ratio": round(ratio, 1)},
        )


def _check_total(total: int, limit: int) -> None:
    if total > limit:
        raise ArchiveTooLargeError(
            f"the archive expands to more than {limit} bytes "
            "(APPFORGE_DATASOURCES__MAX_UNCOMPRESSED_BYTES)",
            details={"limit": limit},
        )


def _read_counting(archive: zipfile.ZipFile, info: zipfile.ZipInfo, total: int, limit: int) -> int:
    """Decompress one member in steps, adding its real size to ``total``; the new total."""
    size = 0
    with archive.open(info) as member:
        while piece := member.read(_STEP):
            size += len(piece)
            if size > info.file_size:
                raise ArchiveTooLargeError(
                    f"the archive member {info.filename!r} is larger than it declares"
                )
            _check_total(total + size, limit)
    return total + size
