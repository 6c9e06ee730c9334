"""Backup and restore: every table and every stored file, as one JSON document.

The document::

    {"format": "appforge-backup", "format_version": 1, "schema_revision": "0008",
     "created_at": "...", "key_fingerprint": "<hex>",
     "tables": {"apps": [{...}, ...], ...},
     "files": {"files/<datasource>/<entry>": "<base64>", ...}}

Secrets are carried as they are stored: webhook and signing secrets encrypted
with the server key, token hashes keyed with it; nothing is decrypted for the
backup. ``key_fingerprint`` names that key (never the key itself), so a
restore on a server with another key is refused before anything is written,
instead of restoring secrets nobody can decrypt. A backup made before a key
rotation restores when its key is among the server's previous keys: its
secrets are re-encrypted with the current key as they are restored (its token
hashes are re-keyed as each token is used). The CLI writes backups 0600.

Rows are written per table in foreign-key order with JSON-safe values
(datetimes as ISO 8601, bytes as base64), so a backup taken on SQLite restores
on PostgreSQL and back. Vectors are not in it: restored datasource entries are
embedded again by the ingestion worker.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, LargeBinary, Table, func, select, text
from sqlalchemy.engine import Connection, Engine

from appforge.backup_file import BackupNotJSON, parts
from appforge.core.db import load_tables, unlimited
from appforge.core.invalidation import MODELS, TOKENS, notify
from appforge.core.keys import ServerKey, stored_fingerprint
from appforge.core.modes import private_dir, write_private
from appforge.key_rotation import encrypted_columns, reencrypt_table
from providers.catalog import catalog_changed

FORMAT = "appforge-backup"
FORMAT_VERSION = 1
FILES_DIR = "files"
# Rows that only matter for a few minutes (replay protection) are not carried over,
# nor browsers' builder sign-ins (a restored home starts signed out).
# The server key's fingerprint belongs to the server, not to its data; the model
# catalog's version counter too (a restore raises it, so servers reload their models).
# Chunks are made again from the entries, like their vectors (a restore requeues
# every entry); the vectors still to remove from a vector store are that store's.
SKIPPED_TABLES = frozenset(
    {
        "used_signatures",
        "server_key",
        "model_catalog",
        "datasource_chunks",
        "builder_sessions",
        "vector_deletions",
    }
)


class BackupError(Exception):
    """The file cannot be restored; nothing was written."""


def _tables() -> list[Table]:
    return [t for t in load_tables().sorted_tables if t.name not in SKIPPED_TABLES]


def _dump_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _load_value(table: Table, column: str, value: Any) -> Any:
    if value is None:
        return None
    kind = table.c[column].type
    if isinstance(kind, DateTime) or isinstance(getattr(kind, "impl", None), DateTime):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(kind, LargeBinary):
        return base64.b64decode(value)
    return value


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows (for an export), read from one snapshot without time limits."""
    tables: dict[str, list[dict[str, Any]]] = {}
    with _snapshot(engine) as conn:
        for table in _tables():
            tables[table.name] = list(_table_rows(conn, table))
    return tables


def _table_rows(conn: Connection, table: Table) -> Iterator[dict[str, Any]]:
    """``table``'s rows with JSON-safe values, in key order, fetched in batches."""
    order = list(table.primary_key.columns)
    query = select(table).order_by(*order).execution_options(yield_per=_ROWS_AT_ONCE)
    for row in conn.execute(query).mappings():
        yield {k: _dump_value(v) for k, v in row.items()}


@dataclass
class Written:
    """What :func:`document` has put in the backup so far."""

    rows: int = 0
    files: int = 0


def document(engine: Engine, home: Path, written: Written | None = None) -> Iterator[bytes]:
    """The backup document (JSON, as described above) in pieces, made as they are
    written: rows are read a few hundred at a time and files in pieces, so a backup
    holds little memory whatever the size of the database and the home (the whole
    document in memory took over four times the size of the files). The rows are one
    consistent snapshot of the database, whatever runs or ingestion write meanwhile:
    a child row is never backed up without the row it refers to."""
    written = written if written is not None else Written()
    head = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_revision": revision(engine),
        "created_at": datetime.now(UTC).isoformat(),
        "key_fingerprint": stored_fingerprint(engine),
    }
    out = _Pieces()
    out.add(json.dumps(head)[:-1].encode() + b', "tables": {')
    with _snapshot(engine) as conn:
        for n, table in enumerate(_tables()):
            out.add(b", " * (n > 0) + json.dumps(table.name).encode() + b": [")
            for i, row in enumerate(_table_rows(conn, table)):
                out.add(b", " * (i > 0) + _row_json(row))
                written.rows += 1
                yield from out.full()
            out.add(b"]")
    out.add(b'}, "files": {')
    root = home / FILES_DIR
    paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    for n, path in enumerate(paths):
        out.add(b", " * (n > 0) + json.dumps(path.relative_to(home).as_posix()).encode() + b': "')
        with path.open("rb") as handle:
            while piece := handle.read(_FILE_PIECE):
                out.add(base64.b64encode(piece))
                yield from out.full()
        out.add(b'"')
        written.files += 1
    out.add(b"}}")
    yield out.take()


# Files are read in pieces of this size, a multiple of 3: their base64 texts join up.
_FILE_PIECE = 3 * 256 * 1024
_ROWS_AT_ONCE = 500


class _Pieces:
    """Bytes gathered until there are enough to write in one go."""

    def __init__(self, size: int = 1024 * 1024) -> None:
        self.size = size
        self._parts: list[bytes] = []
        self._held = 0

    def add(self, data: bytes) -> None:
        self._parts.append(data)
        self._held += len(data)

    def full(self) -> Iterator[bytes]:
        if self._held >= self.size:
            yield self.take()

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts, self._held = [], 0
        return data


def _row_json(row: dict[str, Any]) -> bytes:
    """One row as UTF-8 JSON. Text that is not valid Unicode (a lone surrogate, stored
    before such input was refused) cannot be written as UTF-8: that row has every
    non-ASCII character escaped instead, which keeps it exactly and still reads back."""
    try:
        return json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(row, ensure_ascii=True).encode("ascii")


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection reading one snapshot of the database (a read-only REPEATABLE READ
    transaction on PostgreSQL, a read transaction on SQLite), without the session's
    time limits (a large table takes what it takes)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))
            with unlimited(conn):
                yield conn
            conn.rollback()
        return
    # pysqlite opens no transaction for a SELECT: each would read its own moment.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.exec_driver_sql("ROLLBACK")


def encode(doc: dict[str, Any], indent: int | None = None) -> bytes:
    """A document (an export) as UTF-8 JSON; with every non-ASCII character escaped
    when it holds text that is not valid Unicode (see :func:`_row_json`)."""
    try:
        return json.dumps(doc, ensure_ascii=False, indent=indent).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(doc, ensure_ascii=True, indent=indent).encode("ascii")


# A backup's problems are said up to this many (a broken file can have millions).
_MOST_PROBLEMS = 50


def check(path: Path, engine: Engine, key: ServerKey | None = None) -> list[str]:
    """Every reason the backup at ``path`` cannot be restored here (empty: it can),
    read as it is parsed; with the server's ``key``, a backup made with one of its
    previous keys can. BackupError if the file is not JSON."""
    head: dict[str, Any] = {}
    problems: list[str] = []
    known = {t.name: t for t in _tables()}
    seen: dict[str, int] = {}
    try:
        for part in parts(path):
            if part.kind == "head":
                head[part.name] = part.value
            elif part.kind == "bad":
                problems.append(part.name)
            elif part.kind == "table":
                seen.setdefault(part.name, 0)
                if part.name not in known:
                    problems.append(f"unknown table {part.name!r}")
            elif part.kind == "row" and part.name in known:
                problems.extend(_row_problems(known[part.name], seen[part.name], part.value))
                seen[part.name] += 1
            elif part.kind == "file":
                rel = Path(part.name)
                if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] != (FILES_DIR,):
                    problems.append(f"file path {part.name!r} is outside the files folder")
                try:
                    binascii.a2b_base64(part.value, strict_mode=True)
                except binascii.Error:
                    problems.append(f"file {part.name!r} is not base64")
            if len(problems) >= _MOST_PROBLEMS:
                problems.append("(more problems not listed)")
                break
    except BackupNotJSON as exc:
        raise BackupError(f"not JSON: {exc}") from exc
    if head.get("format") != FORMAT:
        return [f'not an appforge backup (no "format": "{FORMAT}")']
    return _head_problems(head, engine, key) + problems


def _head_problems(head: dict[str, Any], engine: Engine, key: ServerKey | None) -> list[str]:
    problems = []
    if head.get("format_version") != FORMAT_VERSION:
        problems.append(
            f"unknown format version {head.get('format_version')!r}; this appforge reads "
            f"{FORMAT_VERSION}"
        )
    here = revision(engine)
    if head.get("schema_revision") != here:
        problems.append(
            f"the backup's schema revision {head.get('schema_revision')!r} is not this "
            f"database's {here!r}"
        )
    return problems + _key_problems(head, engine, key)


def _row_problems(table: Table, i: int, row: dict[str, Any]) -> list[str]:
    problems = []
    unknown = set(row) - set(table.c.keys())
    if unknown:
        problems.append(f"{table.name}[{i}] has unknown columns {sorted(unknown)}")
    try:
        for column, value in row.items():
            if column in table.c:
                _load_value(table, column, value)
    except (ValueError, TypeError) as exc:
        problems.append(f"{table.name}[{i}]: {exc}")
    return problems


def _key_problems(doc: dict[str, Any], engine: Engine, key: ServerKey | None) -> list[str]:
    """Why the backup's secrets cannot be used with this server's key (empty: they can)."""
    theirs, ours = doc.get("key_fingerprint"), stored_fingerprint(engine)
    if theirs is None or ours is None or theirs == ours:
        return []
    if key is not None and theirs in key.fingerprints:
        return []
    return [
        f"the backup's secrets are encrypted with another server key (fingerprint {theirs}; "
        f"this server's is {ours}): restore it on a server started with the key of the "
        "server it was made on (its APPFORGE_SECRET_KEY or secret.key), or with that key "
        "among the previous keys (APPFORGE_SECRET_KEY_PREVIOUS or secret.previous)"
    ]


def is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        return all((conn.scalar(select(func.count()).select_from(t)) or 0) == 0 for t in _tables())


def load(
    path: Path, engine: Engine, home: Path, key: ServerKey | None = None
) -> tuple[dict[str, int], int]:
    """Replace everything with the backup at ``path``, read as it is parsed: its files
    are written first, beside the home's (a full disk stops the restore before the
    database is touched); then its rows, in one transaction (a few hundred at a
    time; with the server's ``key``, restored secrets are re-encrypted with it in
    that transaction); then the files are moved into place, which takes no space.

    Call :func:`check` first, and this only if it found no problem.
    Returns the number of rows restored per table, and of files.
    """
    staging = home / f".restoring-{os.getpid()}"
    try:
        staged = _stage_files(path, staging)
        tables = _tables()
        with engine.begin() as conn, unlimited(conn):  # however large the backup
            for table in reversed(tables):
                conn.execute(table.delete())
            counts = _insert_rows(conn, path, tables)
            if key is not None:
                for table, columns in encrypted_columns():
                    reencrypt_table(conn, table, columns, key)
            conn.execute(catalog_changed())
            if conn.dialect.name == "postgresql":
                _move_sequences(conn, tables)
        # Servers running on this database (PostgreSQL) drop their tokens and models now.
        notify(engine, TOKENS, MODELS)
        for rel in staged:
            private_dir(home / Path(rel).parent)  # and its parents
            os.replace(staging / rel, home / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts, len(staged)


def _stage_files(path: Path, staging: Path) -> list[str]:
    """Write the backup's files under ``staging``; their paths (relative)."""
    staged = []
    for part in parts(path):
        if part.kind == "file":
            write_private(staging / part.name, base64.b64decode(part.value), make_parents=True)
            staged.append(part.name)
    return staged


def _insert_rows(conn: Connection, path: Path, tables: list[Table]) -> dict[str, int]:
    """Insert the backup's rows, a batch at a time. A table whose rows come before
    the rows of a table it refers to (a document not written in our order) waits in
    memory until those are in, or until the end."""
    by_name = {t.name: t for t in tables}
    counts = dict.fromkeys(by_name, 0)
    done: set[str] = set()
    held: dict[str, list[dict[str, Any]]] = {}
    batch: list[dict[str, Any]] = []
    current: Table | None = None

    def ready(table: Table) -> bool:
        parents = {fk.column.table.name for fk in table.foreign_keys} - {table.name}
        return parents <= done

    def finish(table: Table | None) -> None:
        if table is None:
            return
        if batch:
            conn.execute(table.insert(), batch)
            batch.clear()
        if table.name not in held:
            done.add(table.name)
        waiting = [n for n in held if ready(by_name[n])]
        while waiting:  # in, each table that waited for it (and those waiting for those)
            for name in waiting:
                conn.execute(by_name[name].insert(), held.pop(name))
                done.add(name)
            waiting = [n for n in held if ready(by_name[n])]

    for part in parts(path):
        if part.kind == "table":
            finish(current)
            current = by_name[part.name]
        elif part.kind == "row" and current is not None:
            row = {k: _load_value(current, k, v) for k, v in part.value.items()}
            counts[current.name] += 1
            if not ready(current):
                held.setdefault(current.name, []).append(row)
                continue
            batch.append(row)
            if len(batch) >= _ROWS_AT_ONCE:
                conn.execute(current.insert(), batch)
                batch.clear()
    finish(current)
    for table in tables:  # what still waits refers to tables the backup does not have
        if table.name in held:
            conn.execute(table.insert(), held.pop(table.name))
    return counts


def _move_sequences(conn: Connection, tables: list[Table]) -> None:
    """Rows came with their ids: move each id sequence past them (PostgreSQL)."""
    for table in tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True:
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', "
                        f"'{column.name}'), COALESCE(MAX({column.name}), 0) + 1, false) "
                        f"FROM {table.name}"
                    )
                )


EXPORT_FORMAT = "appforge-export"
_PROMPT_TABLES = ("use_cases", "prompts", "prompt_versions", "prompt_labels", "prompt_deployments")
_SECRET_COLUMNS = frozenset({"token_hash", "signing_secret", "secret"})


def export(engine: Engine, *, runs: bool = False, prompts: bool = False) -> dict[str, Any]:
    """The user's work in a readable shape: apps as YAML with every version, datasources
    with their entries and metadata (not vectors), optionally prompts and runs."""
    tables = _rows(engine)
    versions: dict[str, list[dict[str, Any]]] = {}
    for v in tables.get("app_versions", []):
        versions.setdefault(v["app_uuid"], []).append(
            {"version": v["version"], "yaml": v["yaml"], "created_at": v["created_at"]}
        )
    apps = [
        {
            "uuid": a["uuid"],
            "name": a["name"],
            "version": a["version"],
            "yaml": a["yaml"],
            "versions": versions.get(a["uuid"], []),
        }
        for a in tables.get("apps", [])
    ]
    entries: dict[str, list[dict[str, Any]]] = {}
    for e in tables.get("datasource_entries", []):
        entries.setdefault(e["datasource_uuid"], []).append(
            {
                k: e.get(k)
                for k in (
                    "uuid",
                    "name",
                    "kind",
                    "content",
                    "url",
                    "media_type",
                    "entry_metadata",
                    "status",
                    "created_at",
                )
            }
        )
    datasources = [
        {**d, "entries": entries.get(d["uuid"], [])} for d in tables.get("datasources", [])
    ]
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(),
        "apps": apps,
        "datasources": datasources,
    }
    if prompts:
        doc["prompts"] = {
            name: [
                {k: v for k, v in row.items() if k not in _SECRET_COLUMNS}
                for row in tables.get(name, [])
            ]
            for name in _PROMPT_TABLES
        }
    if runs:
        doc["runs"] = tables.get("runs", [])
    return doc
