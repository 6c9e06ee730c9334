"""The database: engine creation, the declarative base, and migrations.

SQLite (WAL, foreign keys on) in ``APPFORGE_HOME`` by default; PostgreSQL when
``APPFORGE_DATABASE_URL`` is set. The schema is owned by Alembic
(``appforge/migrations``); :func:`migrate` brings a database to the newest
revision and is safe to call from several processes at once on PostgreSQL.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, Integer, MetaData, String, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from appforge.core.errors import StorageFullError, StorageReadOnlyError
from appforge.core.settings_models import PostgresSettings

_T = TypeVar("_T")

if TYPE_CHECKING:
    from appforge.core.keys import ServerKey

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Packages declare their table modules under this entry-point group (see
# pyproject.toml); the kernel loads them without naming any package above it.
TABLES_GROUP = "appforge.tables"

# A fixed lock id for pg_advisory_lock while migrating (any constant works).
_MIGRATION_LOCK = 73_2611_0001

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table; each package defines its own models on it."""

    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class ServerKeyCheck(Base):
    """One row: the fingerprint of the server key this database's secrets are
    encrypted with (see appforge/core/keys.py). Not part of backups."""

    __tablename__ = "server_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


def load_tables() -> MetaData:
    """Import every registered table module, so ``Base.metadata`` holds every table.

    Used by Alembic (to compare the schema) and by backups (to walk the tables).
    """
    _load_table_modules()
    return Base.metadata


@functools.cache
def _load_table_modules() -> None:
    # Once per process: scanning every installed distribution for entry points takes
    # a good part of a second, and an imported module stays imported.
    for entry in entry_points(group=TABLES_GROUP):
        entry.load()


def unmanaged(*names: str) -> None:
    """Declare schema objects that a migration makes in raw SQL and no model describes
    (a full-text index, its shadow tables, a generated column as ``table.column``): the
    schema comparison skips them and every object whose name starts with ``<name>_``."""
    Base.metadata.info.setdefault("unmanaged", set()).update(names)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object``: everything but the :func:`unmanaged` objects."""
    if not reflected or compare_to is not None or name is None:
        return True
    names: set[str] = Base.metadata.info.get("unmanaged", set())
    if type_ == "column":
        name = f"{obj.table.name}.{name}"
    return name not in names and not any(name.startswith(f"{n}_") for n in names)


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (psycopg2 is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, postgres: PostgresSettings | None = None) -> Engine:
    """Create the engine; SQLite gets WAL, a busy timeout and foreign keys. PostgreSQL
    connections give up connecting after 10 s, notice a silent server by TCP
    keepalives (each unless the URL sets its own), and carry ``postgres``'s limits."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    parsed = make_url(url)
    missing = {k: str(v) for k, v in CONNECTION_DEFAULTS.items() if k not in parsed.query}
    engine = create_engine(parsed.update_query_dict(missing), pool_size=10, max_overflow=20)
    ping_idle_connections(engine, PING_AFTER_IDLE_SECONDS)
    limit_sessions(engine, postgres or PostgresSettings())
    return engine


# Every PostgreSQL connection's, unless the URL says otherwise: a new connection gives
# up after 10 s, and a server gone without a word (a dropped route, a failover, a host
# powered off) is noticed within about a minute by TCP keepalives, not after the
# kernel's retries (a quarter of an hour) with the request waiting.
CONNECTION_DEFAULTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

# The session settings of PostgresSettings' limits (milliseconds; 0 is none).
_LIMITS = (
    ("lock_timeout", "lock_timeout_seconds"),
    ("statement_timeout", "statement_timeout_seconds"),
    ("idle_in_transaction_session_timeout", "idle_in_transaction_seconds"),
)


def limit_sessions(engine: Engine, postgres: PostgresSettings) -> None:
    """Set ``postgres``'s limits on each new connection (one round trip when it opens;
    SET rather than the ``options`` startup parameter, which poolers such as PgBouncer
    refuse)."""
    values = {name: round(getattr(postgres, field) * 1000) for name, field in _LIMITS}
    sets = "; ".join(f"SET {name} = {ms}" for name, ms in values.items())

    @event.listens_for(engine, "connect")
    def _limited(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(sets)
        dbapi_conn.commit()


@contextmanager
def unlimited(conn: Connection) -> Iterator[None]:
    """No limits for the transaction ``conn`` is opening (a migration, a restore: long
    work, and waits for other processes' migrations); back to the connection's own
    after it, whether it commits or not (SET LOCAL)."""
    if conn.dialect.name == "postgresql":
        for name, _ in _LIMITS:
            conn.execute(text(f"SET LOCAL {name} = 0"))
    yield


# A pooled server connection idle for this long is pinged before it is used again.
PING_AFTER_IDLE_SECONDS = 2.0


def ping_idle_connections(
    engine: Engine, idle_seconds: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """Ping a pooled connection before use when it has been idle ``idle_seconds`` or more;
    one that does not answer is replaced (a database restart, a dropped idle connection).

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: two extra round trips
    per run on a busy server, whose connections go back to work within
    milliseconds and would fail their ping no more often than their next
    statement. A connection that broke while in use is dropped by SQLAlchemy
    itself, with every connection opened before it.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = clock()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or clock() - since < idle_seconds:
            return  # new, or back from work a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and checks out another.
            raise DisconnectionError("a pooled connection did not answer its ping") from exc


def once_more_if_ended(work: Callable[[], _T]) -> _T:
    """``work()`` (one transaction), tried once more if it met a pooled connection the
    database had ended: a restart, a failover, a session ended by an administrator.
    SQLAlchemy has then dropped that connection and every one opened before it, so
    the second try gets a new one; the first left nothing behind (its transaction
    never reached the server, or was rolled back with the connection)."""
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return work()


# SQLite's words for a database that cannot be used now (its other operational errors,
# "no such table" say, are bugs or a missing migration, not an outage).
_SQLITE_AWAY = ("database is locked", "unable to open database file", "disk i/o error")


def unavailable(exc: BaseException) -> str | None:
    """Why the database cannot be used now, if ``exc`` says so: PostgreSQL gone or
    restarting (any operational error from the server or the connection, or any
    error that ended the connection, such as the server ending a transaction left
    idle past its limit), SQLite locked or its file unreadable; None for any other."""
    if not isinstance(exc, DBAPIError):
        return None
    if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
        return None
    first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    if type(exc.orig).__module__.startswith("sqlite3") and not any(
        word in first.lower() for word in _SQLITE_AWAY
    ):
        return None
    return first[:300]


# SQLSTATEs of a statement stopped at a limit of PostgresSettings: lock_not_available
# (lock_timeout), query_canceled (statement_timeout, or an operator's cancel).
_LOCK_TIMEOUT, _STATEMENT_TIMEOUT = "55P03", "57014"


def _sqlstate(exc: BaseException) -> str | None:
    found = exc.orig if isinstance(exc, OperationalError) else exc
    return getattr(found, "sqlstate", None)


def timed_out(exc: BaseException) -> bool:
    """Whether PostgreSQL stopped the statement of ``exc`` at a time limit: a lock held
    elsewhere too long, or a statement past ``statement_timeout``."""
    return _sqlstate(exc) in (_LOCK_TIMEOUT, _STATEMENT_TIMEOUT)


def statement_timed_out(exc: BaseException) -> bool:
    """Whether PostgreSQL stopped the statement of ``exc`` past ``statement_timeout`` (or
    an operator cancelled it): the statement's own length may be why, unlike a lock
    another holds."""
    return _sqlstate(exc) == _STATEMENT_TIMEOUT


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite's words (Chroma's own SQLite says them in its errors too), and the OS's.
_FULL_WORDS = re.compile(r"database or disk is full|No space left on device")
_POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full


def storage_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from, says the disk is full: no space
    left on the device (or over quota), SQLite's "database or disk is full" (through
    SQLAlchemy, ``sqlite3`` or an embedded Chroma's error), PostgreSQL's disk_full."""
    return _chain_says(exc, StorageFullError, _FULL_ERRNOS, _POSTGRES_DISK_FULL, _FULL_WORDS)


# SQLite's words for a file it may not write (and the OS's, through Chroma's errors).
_READ_ONLY_WORDS = re.compile(r"readonly database|Read-only file system")
_POSTGRES_READ_ONLY = "25006"  # SQLSTATE read_only_sql_transaction: a standby, say


def read_only(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from, says the storage takes no
    writes: a read-only file system (EROFS), SQLite's "attempt to write a readonly
    database" (through SQLAlchemy, ``sqlite3`` or an embedded Chroma's error),
    PostgreSQL refusing a write in a read-only transaction (a standby)."""
    return _chain_says(
        exc, StorageReadOnlyError, frozenset({errno.EROFS}), _POSTGRES_READ_ONLY, _READ_ONLY_WORDS
    )


def _chain_says(
    exc: BaseException | None,
    ours: type[Exception],
    errnos: frozenset[int],
    sqlstate: str,
    words: re.Pattern[str],
) -> bool:
    """Whether ``exc`` or an error in its ``__cause__`` chain is ``ours``, an OSError with
    one of ``errnos``, a database error with ``sqlstate``, or an SQLite (or Chroma)
    error saying ``words``."""
    while exc is not None:
        if isinstance(exc, ours):
            return True
        if isinstance(exc, OSError) and exc.errno in errnos:
            return True
        found = exc.orig if isinstance(exc, DBAPIError) else exc
        if getattr(found, "sqlstate", None) == sqlstate:
            return True
        module = type(found).__module__
        if module.startswith(("sqlite3", "chromadb")) and words.search(str(found)):
            return True
        exc = exc.__cause__
    return False


def failure_reason(exc: BaseException) -> str | None:
    """What keeps writes from working now, if ``exc`` says it is not a bug: the disk
    full (:func:`storage_full`), the storage read-only (:func:`read_only`) or the
    database away (:func:`unavailable`)."""
    first = (str(exc).splitlines() or [""])[0][:300]
    if storage_full(exc):
        return f"the disk is full ({first})"
    if read_only(exc):
        return f"the storage is read-only ({first})"
    return unavailable(exc)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(engine: Engine, server_key: ServerKey | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    cfg.attributes["server_key"] = server_key
    return cfg


def migrate(engine: Engine, server_key: ServerKey | None = None) -> None:
    """Upgrade the database to the newest revision.

    ``server_key`` (an ``appforge.core.keys.ServerKey``) is what migrations that
    encrypt stored secrets use; without it they refuse a database that holds
    secrets in plain text. On PostgreSQL an advisory lock makes concurrent start-ups of several API
    processes wait for each other instead of racing on DDL.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn, unlimited(conn):
            # Unlimited: another process's migration is waited for however long it takes.
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            try:
                _upgrade(conn, alembic_config(engine, server_key))
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
        return
    # SQLite: several processes (uvicorn --workers) may start at once; a lock
    # file next to the database makes them migrate one after the other.
    database = engine.url.database
    lock_path = Path(f"{database}.migrate.lock") if database and database != ":memory:" else None
    with _file_lock(lock_path), engine.begin() as conn:
        _upgrade(conn, alembic_config(engine, server_key))


def _upgrade(conn: Connection, cfg: Config) -> None:
    """``alembic upgrade head`` on ``conn``, skipped when it is at the newest revision
    already: Alembic would load every migration script to find that out."""
    load_tables()  # the table modules are imported whether a migration runs or not
    if set(MigrationContext.configure(conn).get_current_heads()) == _script_heads():
        return
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


@functools.cache
def _script_heads() -> frozenset[str]:
    """The newest revisions of the migration scripts (read once per process)."""
    return frozenset(ScriptDirectory(str(MIGRATIONS)).get_heads())


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
