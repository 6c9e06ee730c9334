"""The run path's statements, compiled once per database dialect and run on the driver.

A run executes about eight small statements. Through ``Connection.execute``
each one costs about ten times the driver's own work in Python (an execution
context, a result object, the compiled-cache look-up); that was the largest
part of a run's in-request overhead after HTTP. A :class:`Lean` statement is
the same Core statement, compiled once per dialect, whose parameters and
result columns go through the very type processors SQLAlchemy would use
(JSON, booleans, ``UTCDateTime``), executed on the DBAPI cursor of the
connection's transaction. So rows read and written are the same on SQLite
and PostgreSQL, and a driver error is raised as SQLAlchemy's (an
``IntegrityError`` stays one), so callers see no difference.

The statement joins the connection's transaction: one is begun if none is, so
``conn.commit()`` and ``conn.rollback()`` reach the driver as they would after
``conn.execute``. Statements whose inserts need Python-side defaults are
refused when compiled: every column with a default must be given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select
from sqlalchemy.sql.expression import ClauseElement

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    """A statement as one dialect runs it."""

    sql: str
    positional: bool
    # (name in the SQL, key in the caller's parameters, default value, processor)
    binds: tuple[tuple[str, str, Any, Processor], ...]
    results: tuple[Processor, ...]


class Lean:
    """A Core statement run on the driver's cursor; see the module docstring.

    ``columns``: for an ``insert(Table)`` without values, the columns given
    (the keys of the parameters, every time).
    """

    def __init__(self, statement: ClauseElement, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        self._by_dialect: dict[tuple[type[Dialect], str], _Compiled] = {}
        self._lock = threading.Lock()

    def _compiled(self, dialect: Dialect) -> _Compiled:
        key = (type(dialect), dialect.driver)
        found = self._by_dialect.get(key)
        if found is not None:
            return found
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=self.columns)
        if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
            raise ValueError("a Lean insert or update must give every column that has a default")
        names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        binds = []
        for name in names:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            binds.append((name, str(bind.key), bind.value, processor))
        results: tuple[Processor, ...] = ()
        if isinstance(self.statement, Select):
            results = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self.statement.selected_columns
            )
        made = _Compiled(str(compiled), compiled.positional, tuple(binds), results)
        with self._lock:
            self._by_dialect[key] = made
        return made

    def _cursor(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        compiled = self._compiled(conn.dialect)
        if not conn.in_transaction():
            conn.begin()  # so that conn.commit() and conn.rollback() reach the driver
        values = []
        for _name, key, default, processor in compiled.binds:
            value = params[key] if key in params else default
            values.append(processor(value) if processor is not None else value)
        args: Any = (
            tuple(values)
            if compiled.positional
            else {b[0]: v for b, v in zip(compiled.binds, values, strict=True)}
        )
        dbapi = conn.dialect.loaded_dbapi
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, args)
        except dbapi.Error as exc:
            cursor.close()
            raise DBAPIError.instance(compiled.sql, args, exc, dbapi.Error) from exc
        return cursor

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute a write; how many rows it changed."""
        cursor = self._cursor(conn, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute a query; its rows, each column converted as SQLAlchemy would."""
        compiled = self._compiled(conn.dialect)
        cursor = self._cursor(conn, params)
        try:
            raw = cursor.fetchall()
        finally:
            cursor.close()
        processors = compiled.results
        if not any(p is not None for p in processors):
            return [tuple(row) for row in raw]
        return [
            tuple(v if p is None else p(v) for p, v in zip(processors, row, strict=True))
            for row in raw
        ]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        found = self.rows(conn, params)
        return found[0] if found else None
