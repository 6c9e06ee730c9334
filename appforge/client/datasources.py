"""Datasources, their entries (text, URL or file, with metadata), and search.

Each operation is written once (a generator, see ``calls``); ``DatasourceMethods``
is its face on ``Client`` and ``AsyncDatasourceMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from appforge.client.calls import AsyncDriven, Call, Op, Sleep, SyncDriven, given, many, one
from appforge.client.models import (
    DatasourceDetail,
    DatasourceInfo,
    DatasourceUpdated,
    EntryInfo,
    SearchResults,
)
from appforge.client.upload import FileSource, MultipartBody

# --- operations -------------------------------------------------------------------------


def _create_datasource(
    name: str,
    type: str,
    chunk_size: int | None,
    chunk_overlap: int | None,
    search_mode: str | None = None,
) -> Op[DatasourceInfo]:
    extra = given(chunk_size=chunk_size, chunk_overlap=chunk_overlap, search_mode=search_mode)
    body = {"name": name, "type": type, **extra}
    r = yield Call("POST", "/api/datasources", json=body)
    return one(DatasourceInfo, r)


def _list_datasources() -> Op[list[DatasourceInfo]]:
    r = yield Call("GET", "/api/datasources")
    return many(DatasourceInfo, r)


def _get_datasource(uuid: str) -> Op[DatasourceDetail]:
    r = yield Call("GET", f"/api/datasources/{uuid}")
    return one(DatasourceDetail, r)


_UNSET: Any = object()  # a field left out of an update (None sets the default)


def _update_datasource(
    uuid: str, chunk_size: int | None, chunk_overlap: int | None, search_mode: str | None
) -> Op[DatasourceUpdated]:
    body: dict[str, Any] = {
        k: v
        for k, v in (("chunk_size", chunk_size), ("chunk_overlap", chunk_overlap))
        if v is not _UNSET
    }
    body.update(given(search_mode=search_mode))
    r = yield Call("PATCH", f"/api/datasources/{uuid}", json=body)
    return one(DatasourceUpdated, r)


def _delete_datasource(uuid: str) -> Op[None]:
    yield Call("DELETE", f"/api/datasources/{uuid}")


def _add_entry(
    datasource: str,
    name: str,
    content: str | None,
    url: str | None,
    file: Path | bytes | None,
    metadata: dict[str, Any] | None,
    media_type: str | None,
    refresh: str | None = None,
) -> Op[EntryInfo]:
    data: dict[str, Any] = {"name": name, **given(content=content, url=url)}
    if file is not None:
        raw = file.read_bytes() if isinstance(file, Path) else file
        data["file"] = base64.b64encode(raw).decode()
    data.update(given(media_type=media_type))
    body = {"entry_data": data, "entry_metadata": metadata or {}, **given(refresh=refresh)}
    r = yield Call("POST", f"/api/datasources/{datasource}/entries", json=body)
    return one(EntryInfo, r)


def _upload_entry(
    datasource: str,
    file: FileSource,
    name: str | None,
    filename: str | None,
    media_type: str | None,
    metadata: dict[str, Any] | None,
) -> Op[EntryInfo]:
    form: dict[str, str] = {}
    if name is not None:
        form["name"] = name
    if metadata:
        form["entry_metadata"] = json.dumps(metadata)
    if filename is None:
        own = file.name if isinstance(file, Path) else getattr(file, "name", None)
        filename = Path(own).name if isinstance(own, str) and own else "upload"
    body = MultipartBody(
        file,
        field="file",
        filename=filename,
        media_type=media_type or "application/octet-stream",
        fields=form,
    )
    path = f"/api/datasources/{datasource}/entries/upload"
    r = yield Call("POST", path, upload=body)
    return one(EntryInfo, r)


def _list_entries(datasource: str) -> Op[list[EntryInfo]]:
    r = yield Call("GET", f"/api/datasources/{datasource}/entries")
    return many(EntryInfo, r)


def _get_entry(datasource: str, entry: str) -> Op[EntryInfo]:
    r = yield Call("GET", f"/api/datasources/{datasource}/entries/{entry}")
    return one(EntryInfo, r)


def _update_entry(datasource: str, entry: str, refresh: str) -> Op[EntryInfo]:
    body = {"refresh": refresh}
    r = yield Call("PATCH", f"/api/datasources/{datasource}/entries/{entry}", json=body)
    return one(EntryInfo, r)


def _retry_entry(datasource: str, entry: str) -> Op[EntryInfo]:
    r = yield Call("POST", f"/api/datasources/{datasource}/entries/{entry}/retry")
    return one(EntryInfo, r)


def _delete_entry(datasource: str, entry: str) -> Op[None]:
    yield Call("DELETE", f"/api/datasources/{datasource}/entries/{entry}")


def _wait_for_entries(datasource: str, timeout: float, poll: float) -> Op[list[EntryInfo]]:
    waited = 0.0
    while True:
        entries = yield from _list_entries(datasource)
        if all(e.status in ("ready", "failed", "refreshing") for e in entries):
            return entries
        if waited >= timeout:
            raise TimeoutError(f"entries of {datasource} not ready after {timeout:g} s")
        yield Sleep(poll)
        waited += poll


def _search(
    datasource: str,
    query: str,
    top_k: int,
    where: dict[str, Any] | None,
    mode: str | None = None,
    keyword_weight: float | None = None,
) -> Op[SearchResults]:
    body: dict[str, Any] = {
        "query": query,
        "top_k": top_k,
        **given(mode=mode, keyword_weight=keyword_weight),
    }
    if where:
        body["where"] = where
    r = yield Call("POST", f"/api/datasources/{datasource}/search", json=body)
    return one(SearchResults, r)


# --- Client -----------------------------------------------------------------------------


class DatasourceMethods(SyncDriven):
    """Datasources, entries and search on ``Client``."""

    def create_datasource(
        self,
        name: str,
        type: str = "mixed",
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        search_mode: str | None = None,
    ) -> DatasourceInfo:
        """A datasource taking ``text``, ``url``, ``file`` or any (``mixed``) entries;
        ``search_mode`` (vector, keyword, hybrid) is how searches naming no mode search it."""
        return self._drive(_create_datasource(name, type, chunk_size, chunk_overlap, search_mode))

    def list_datasources(self) -> list[DatasourceInfo]:
        """The datasources, oldest first."""
        return self._drive(_list_datasources())

    def get_datasource(self, uuid: str) -> DatasourceDetail:
        """A datasource with how many entries are in each status."""
        return self._drive(_get_datasource(uuid))

    def update_datasource(
        self,
        uuid: str,
        *,
        chunk_size: int | None = _UNSET,
        chunk_overlap: int | None = _UNSET,
        search_mode: str | None = None,
    ) -> DatasourceUpdated:
        """Change chunk settings (None: the default; left out: unchanged) or the default
        search mode; new chunk settings re-ingest the entries (``requeued`` of them)."""
        return self._drive(_update_datasource(uuid, chunk_size, chunk_overlap, search_mode))

    def delete_datasource(self, uuid: str) -> None:
        """Delete a datasource with its entries and their chunks."""
        return self._drive(_delete_datasource(uuid))

    def add_entry(
        self,
        datasource: str,
        name: str,
        *,
        content: str | None = None,
        url: str | None = None,
        file: Path | bytes | None = None,
        metadata: dict[str, Any] | None = None,
        media_type: str | None = None,
        refresh: str | None = None,
    ) -> EntryInfo:
        """Add a text, URL or file entry (files go base64 in the JSON body); a URL entry
        may be ``refresh``-ed daily or weekly."""
        return self._drive(
            _add_entry(datasource, name, content, url, file, metadata, media_type, refresh)
        )

    def upload_entry(
        self,
        datasource: str,
        file: FileSource,
        *,
        name: str | None = None,
        filename: str | None = None,
        media_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> EntryInfo:
        """Add a file entry as multipart/form-data: streamed from a path, an open binary
        file or bytes, never base64 nor whole in memory (up to the server's
        ``APPFORGE_DATASOURCES__MAX_FILE_BYTES``)."""
        return self._drive(_upload_entry(datasource, file, name, filename, media_type, metadata))

    def list_entries(self, datasource: str) -> list[EntryInfo]:
        """The entries of a datasource, oldest first."""
        return self._drive(_list_entries(datasource))

    def get_entry(self, datasource: str, entry: str) -> EntryInfo:
        """One entry and where its ingestion is."""
        return self._drive(_get_entry(datasource, entry))

    def update_entry(self, datasource: str, entry: str, *, refresh: str) -> EntryInfo:
        """Set a URL entry's refresh schedule: none, daily or weekly."""
        return self._drive(_update_entry(datasource, entry, refresh))

    def retry_entry(self, datasource: str, entry: str) -> EntryInfo:
        """Queue a failed (or finished) entry for ingestion again."""
        return self._drive(_retry_entry(datasource, entry))

    def delete_entry(self, datasource: str, entry: str) -> None:
        """Delete an entry and its chunks."""
        return self._drive(_delete_entry(datasource, entry))

    def wait_for_entries(
        self, datasource: str, timeout: float = 300.0, poll: float = 0.5
    ) -> list[EntryInfo]:
        """Poll until no entry of the datasource is pending or processing (an entry being
        refreshed stays searchable: nothing to wait for)."""
        return self._drive(_wait_for_entries(datasource, timeout, poll))

    def search(
        self,
        datasource: str,
        query: str,
        top_k: int = 4,
        where: dict[str, Any] | None = None,
        *,
        mode: str | None = None,
        keyword_weight: float | None = None,
    ) -> SearchResults:
        """The ``top_k`` best chunks for ``query`` by ``mode`` (vector, keyword, hybrid;
        None: the datasource's own); ``where`` filters on metadata."""
        return self._drive(_search(datasource, query, top_k, where, mode, keyword_weight))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncDatasourceMethods(AsyncDriven):
    """Datasources, entries and search on ``AsyncClient``."""

    async def create_datasource(
        self,
        name: str,
        type: str = "mixed",
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        search_mode: str | None = None,
    ) -> DatasourceInfo:
        """A datasource taking ``text``, ``url``, ``file`` or any (``mixed``) entries;
        ``search_mode`` (vector, keyword, hybrid) is how searches naming no mode search it."""
        return await self._drive(
            _create_datasource(name, type, chunk_size, chunk_overlap, search_mode)
        )

    async def list_datasources(self) -> list[DatasourceInfo]:
        """The datasources, oldest first."""
        return await self._drive(_list_datasources())

    async def get_datasource(self, uuid: str) -> DatasourceDetail:
        """A datasource with how many entries are in each status."""
        return await self._drive(_get_datasource(uuid))

    async def update_datasource(
        self,
        uuid: str,
        *,
        chunk_size: int | None = _UNSET,
        chunk_overlap: int | None = _UNSET,
        search_mode: str | None = None,
    ) -> DatasourceUpdated:
        """Change chunk settings (None: the default; left out: unchanged) or the default
        search mode; new chunk settings re-ingest the entries (``requeued`` of them)."""
        return await self._drive(_update_datasource(uuid, chunk_size, chunk_overlap, search_mode))

    async def delete_datasource(self, uuid: str) -> None:
        """Delete a datasource with its entries and their chunks."""
        return await self._drive(_delete_datasource(uuid))

    async def add_entry(
        self,
        datasource: str,
        name: str,
        *,
        content: str | None = None,
        url: str | None = None,
        file: Path | bytes | None = None,
        metadata: dict[str, Any] | None = None,
        media_type: str | None = None,
        refresh: str | None = None,
    ) -> EntryInfo:
        """Add a text, URL or file entry (files go base64 in the JSON body); a URL entry
        may be ``refresh``-ed daily or weekly."""
        return await self._drive(
            _add_entry(datasource, name, content, url, file, metadata, media_type, refresh)
        )

    async def upload_entry(
        self,
        datasource: str,
        file: FileSource,
        *,
        name: str | None = None,
        filename: str | None = None,
        media_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> EntryInfo:
        """Add a file entry as multipart/form-data: streamed from a path, an open binary
        file or bytes, never base64 nor whole in memory (up to the server's
        ``APPFORGE_DATASOURCES__MAX_FILE_BYTES``)."""
        return await self._drive(
            _upload_entry(datasource, file, name, filename, media_type, metadata)
        )

    async def list_entries(self, datasource: str) -> list[EntryInfo]:
        """The entries of a datasource, oldest first."""
        return await self._drive(_list_entries(datasource))

    async def get_entry(self, datasource: str, entry: str) -> EntryInfo:
        """One entry and where its ingestion is."""
        return await self._drive(_get_entry(datasource, entry))

    async def update_entry(self, datasource: str, entry: str, *, refresh: str) -> EntryInfo:
        """Set a URL entry's refresh schedule: none, daily or weekly."""
        return await self._drive(_update_entry(datasource, entry, refresh))

    async def retry_entry(self, datasource: str, entry: str) -> EntryInfo:
        """Queue a failed (or finished) entry for ingestion again."""
        return await self._drive(_retry_entry(datasource, entry))

    async def delete_entry(self, datasource: str, entry: str) -> None:
        """Delete an entry and its chunks."""
        return await self._drive(_delete_entry(datasource, entry))

    async def wait_for_entries(
        self, datasource: str, timeout: float = 300.0, poll: float = 0.5
    ) -> list[EntryInfo]:
        """Poll until no entry of the datasource is pending or processing (an entry being
        refreshed stays searchable: nothing to wait for)."""
        return await self._drive(_wait_for_entries(datasource, timeout, poll))

    async def search(
        self,
        datasource: str,
        query: str,
        top_k: int = 4,
        where: dict[str, Any] | None = None,
        *,
        mode: str | None = None,
        keyword_weight: float | None = None,
    ) -> SearchResults:
        """The ``top_k`` best chunks for ``query`` by ``mode`` (vector, keyword, hybrid;
        None: the datasource's own); ``where`` filters on metadata."""
        return await self._drive(_search(datasource, query, top_k, where, mode, keyword_weight))
