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
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, LargeBinary, Table, func, select, text
from sqlalchemy.engine import Engine

from appforge.core.db import load_tables, unlimited
from appforge.core.invalidation import MODELS, TOKENS, notify
from appforge.core.keys import ServerKey, stored_fingerprint
from appforge.core.modes import write_private
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
# every entry).
SKIPPED_TABLES = frozenset(
    {"used_signatures", "server_key", "model_catalog", "datasource_chunks", "builder_sessions"}
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
    tables: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table in _tables():
            order = list(table.primary_key.columns)
            rows = conn.execute(select(table).order_by(*order)).mappings()
            tables[table.name] = [{k: _dump_value(v) for k, v in row.items()} for row in rows]
    return tables


def dump(engine: Engine, home: Path) -> dict[str, Any]:
    """Everything in the database and the home's files folder."""
    tables = _rows(engine)
    files: dict[str, str] = {}
    root = home / FILES_DIR
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            files[path.relative_to(home).as_posix()] = base64.b64encode(path.read_bytes()).decode()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_revision": revision(engine),
        "created_at": datetime.now(UTC).isoformat(),
        "key_fingerprint": stored_fingerprint(engine),
        "tables": tables,
        "files": files,
    }


def encode(doc: dict[str, Any], indent: int | None = None) -> bytes:
    """The document as UTF-8 JSON. Text that is not valid Unicode (a lone surrogate,
    stored before such input was refused) cannot be written as UTF-8: then every
    non-ASCII character is escaped instead, which keeps it exactly and still reads back."""
    try:
        return json.dumps(doc, ensure_ascii=False, indent=indent).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(doc, ensure_ascii=True, indent=indent).encode("ascii")


def check(doc: Any, engine: Engine, key: ServerKey | None = None) -> list[str]:
    """Every reason this document cannot be restored here (empty: it can); with the
    server's ``key``, a backup made with one of its previous keys can."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return [f'not an appforge backup (no "format": "{FORMAT}")']
    problems = []
    if doc.get("format_version") != FORMAT_VERSION:
        problems.append(
            f"unknown format version {doc.get('format_version')!r}; this appforge reads "
            f"{FORMAT_VERSION}"
        )
    here = revision(engine)
    if doc.get("schema_revision") != here:
        problems.append(
            f"the backup's schema revision {doc.get('schema_revision')!r} is not this "
            f"database's {here!r}"
        )
    problems.extend(_key_problems(doc, engine, key))
    known = {t.name: t for t in _tables()}
    tables = doc.get("tables")
    if not isinstance(tables, dict):
        return [*problems, '"tables" must be an object']
    for name, rows in tables.items():
        table = known.get(name)
        if table is None:
            problems.append(f"unknown table {name!r}")
            continue
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            problems.append(f"table {name!r} must be a list of objects")
            continue
        for i, row in enumerate(rows):
            unknown = set(row) - set(table.c.keys())
            if unknown:
                problems.append(f"{name}[{i}] has unknown columns {sorted(unknown)}")
            try:
                for column, value in row.items():
                    if column in table.c:
                        _load_value(table, column, value)
            except (ValueError, TypeError) as exc:
                problems.append(f"{name}[{i}]: {exc}")
    files = doc.get("files", {})
    if not isinstance(files, dict):
        problems.append('"files" must be an object')
    else:
        for rel in files:
            path = Path(rel)
            if path.is_absolute() or ".." in path.parts or path.parts[:1] != (FILES_DIR,):
                problems.append(f"file path {rel!r} is outside the files folder")
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
    doc: dict[str, Any], engine: Engine, home: Path, key: ServerKey | None = None
) -> dict[str, int]:
    """Replace everything with the backup's content, in one transaction; with the
    server's ``key``, restored secrets are re-encrypted with it in that transaction.

    Call :func:`check` first; this raises BackupError if it finds problems.
    Returns the number of rows restored per table.
    """
    problems = check(doc, engine, key)
    if problems:
        raise BackupError("; ".join(problems))
    tables = _tables()
    counts: dict[str, int] = {}
    with engine.begin() as conn, unlimited(conn):  # however large the backup
        for table in reversed(tables):
            conn.execute(table.delete())
        for table in tables:
            rows = [
                {k: _load_value(table, k, v) for k, v in row.items()}
                for row in doc["tables"].get(table.name, [])
            ]
            if rows:
                conn.execute(table.insert(), rows)
            counts[table.name] = len(rows)
        if key is not None:
            for table, columns in encrypted_columns():
                reencrypt_table(conn, table, columns, key)
        conn.execute(catalog_changed())
        if conn.dialect.name == "postgresql":
            # Rows came with their ids: move each id sequence past them.
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
    # Servers running on this database (PostgreSQL) drop their tokens and models now.
    notify(engine, TOKENS, MODELS)
    for rel, data in doc.get("files", {}).items():
        write_private(home / rel, base64.b64decode(data), make_parents=True)
    return counts


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
