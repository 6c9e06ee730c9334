"""Errors of the datasources package; each carries ``code`` and ``status_code``.

Every one derives from the root ``appforge.core.errors.AppforgeError``.

The API renders them as the one error body (``api/errors.py``)::

    DatasourceError                 base: ``code``, ``status_code``, ``message``, ``details``
    ├── DatasourceNotFoundError     404 DATASOURCE_NOT_FOUND
    ├── EntryNotFoundError          404 ENTRY_NOT_FOUND
    ├── DatasourceExistsError       409 DATASOURCE_EXISTS
    ├── DuplicateEntryError         409 DUPLICATE_ENTRY (details name the existing entry)
    ├── EntryBusyError              409 ENTRY_BUSY (retry of an entry still being processed)
    ├── EntryTooLargeError          413 ENTRY_TOO_LARGE (also: too much text, too many chunks)
    │   └── ArchiveTooLargeError    413 ARCHIVE_TOO_LARGE (a zip/DOCX or PDF stream expands too far)
    ├── EntryInvalidError           422 ENTRY_INVALID, METADATA_INVALID
    ├── ChunkSettingsInvalidError   422 CHUNK_SETTINGS_INVALID (overlap not below the size)
    ├── FilterInvalidError          422 FILTER_INVALID
    ├── UrlRefusedError             422 URL_REFUSED (SSRF guard)
    ├── FetchError                  502 FETCH_FAILED
    │   └── FetchTimeoutError       504 FETCH_TIMEOUT (the whole fetch's deadline passed)
    ├── ExtractError                422 EXTRACT_FAILED
    └── VectorStoreUnavailableError 503 VECTOR_STORE_UNAVAILABLE (the Chroma server cannot
                                    be reached; nothing was changed)

Errors raised by the ingestion worker end up as the entry's ``error`` text
(``"FETCH_FAILED: ..."``) instead of an HTTP answer.
"""

from __future__ import annotations

from appforge.core.errors import AppforgeError


class DatasourceError(AppforgeError):
    code = "DATASOURCE_ERROR"
    status_code = 400

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class DatasourceNotFoundError(DatasourceError):
    code = "DATASOURCE_NOT_FOUND"
    status_code = 404


class EntryNotFoundError(DatasourceError):
    code = "ENTRY_NOT_FOUND"
    status_code = 404


class DatasourceExistsError(DatasourceError):
    code = "DATASOURCE_EXISTS"
    status_code = 409


class DuplicateEntryError(DatasourceError):
    code = "DUPLICATE_ENTRY"
    status_code = 409


class EntryBusyError(DatasourceError):
    code = "ENTRY_BUSY"
    status_code = 409


class EntryTooLargeError(DatasourceError):
    code = "ENTRY_TOO_LARGE"
    status_code = 413


class ArchiveTooLargeError(EntryTooLargeError):
    code = "ARCHIVE_TOO_LARGE"
    status_code = 413


class EntryInvalidError(DatasourceError):
    code = "ENTRY_INVALID"
    status_code = 422


class ChunkSettingsInvalidError(DatasourceError):
    code = "CHUNK_SETTINGS_INVALID"
    status_code = 422


class FilterInvalidError(DatasourceError):
    code = "FILTER_INVALID"
    status_code = 422


class UrlRefusedError(DatasourceError):
    code = "URL_REFUSED"
    status_code = 422


class FetchError(DatasourceError):
    code = "FETCH_FAILED"
    status_code = 502


class FetchTimeoutError(FetchError):
    code = "FETCH_TIMEOUT"
    status_code = 504


class ExtractError(DatasourceError):
    code = "EXTRACT_FAILED"
    status_code = 422


class VectorStoreUnavailableError(DatasourceError):
    code = "VECTOR_STORE_UNAVAILABLE"
    status_code = 503
    stage = "waiting for the vector store"  # an entry's, given back to wait for it


# The stage of an entry given back because the disk was full (the queue waits a while).
DISK_FULL_STAGE = "waiting for disk space"
# The stage of an entry given back because the database was away, or a lock held
# elsewhere outlasted the lock timeout, when its chunks were written.
DATABASE_STAGE = "waiting for the database"
