"""Re-encrypting the database's secrets under the current server key.

Every encrypted column (``ENCRYPTED_COLUMNS``) is read, each value decrypted with
the current or a previous key and encrypted again with the current one
(``MultiFernet.rotate``), one transaction per table (rows locked on PostgreSQL,
so a concurrent change waits instead of being overwritten). Only when every
table is done is the current key recorded as the database's key
(``server_key``); until then the recorded one is a previous key, which a
server must keep among its previous keys to start.

Token hashes cannot be re-keyed here (that needs the token itself): a token is
re-hashed under the current key the first time it is used (``api.auth``).
:func:`scan` counts what is still under a previous key, so an operator knows
when the previous keys can go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Table, and_, func, or_, select, update
from sqlalchemy.engine import Connection, Engine

from api.tables import Token, Webhook
from appforge.core.keys import LEGACY_SCHEME, SecretKeyError, ServerKey, record_fingerprint
from providers.tables import StoredProvider


def encrypted_columns() -> list[tuple[Table, list[Column[str]]]]:
    """Each table with encrypted columns, and those columns."""
    found: list[tuple[Table, list[Column[str]]]] = []
    for model, names in (
        (Token, ("signing_secret",)),
        (Webhook, ("secret",)),
        (StoredProvider, ("api_key", "headers")),
    ):
        table = model.__table__
        assert isinstance(table, Table)
        found.append((table, [table.c[name] for name in names]))
    return found


@dataclass(frozen=True)
class ColumnState:
    """The values of one encrypted column, by the key that decrypts them."""

    column: str  # "table.column"
    current: int
    previous: int
    unreadable: list[str]  # primary keys of rows no known key decrypts


@dataclass(frozen=True)
class TokenState:
    """Tokens whose hash may still be keyed with a previous key, or be a legacy one."""

    not_used_since_recorded: int  # live, made and last used before the key was recorded
    legacy: int


def scan(engine: Engine, key: ServerKey) -> list[ColumnState]:
    """Every encrypted column's values, counted by the key that decrypts them."""
    states = []
    with engine.connect() as conn:
        for table, columns in encrypted_columns():
            (pk,) = table.primary_key.columns
            for column in columns:
                rows = conn.execute(select(pk, column).where(column.is_not(None))).all()
                indexes = [(row[0], key.key_index(row[1])) for row in rows]
                states.append(
                    ColumnState(
                        column=f"{table.name}.{column.name}",
                        current=sum(1 for _, i in indexes if i == 0),
                        previous=sum(1 for _, i in indexes if i is not None and i > 0),
                        unreadable=[str(ident) for ident, i in indexes if i is None],
                    )
                )
    return states


def token_state(engine: Engine, recorded: datetime | None) -> TokenState:
    """Live tokens not used since ``recorded`` (when the current key was recorded)."""
    live = Token.revoked_at.is_(None)
    with engine.connect() as conn:
        legacy = conn.scalar(select(func.count()).where(live, Token.hash_scheme == LEGACY_SCHEME))
        stale: int | None = 0
        if recorded is not None:
            stale = conn.scalar(
                select(func.count()).where(
                    live,
                    Token.created_at < recorded,
                    or_(Token.last_used_at.is_(None), Token.last_used_at < recorded),
                )
            )
    return TokenState(not_used_since_recorded=stale or 0, legacy=legacy or 0)


def reencrypt(engine: Engine, key: ServerKey) -> dict[str, int]:
    """Encrypt every stored secret again with the current key, one transaction per
    table, then record the key; returns how many values each column had.

    Raises SecretKeyError, naming the rows, if a value decrypts with no known key:
    that table is left as it was (tables before it are done, and stay readable)."""
    counts: dict[str, int] = {}
    for table, columns in encrypted_columns():
        with engine.begin() as conn:
            counts.update(reencrypt_table(conn, table, columns, key))
    with engine.begin() as conn:
        record_fingerprint(conn, key)
    return counts


def reencrypt_table(
    conn: Connection, table: Table, columns: list[Column[str]], key: ServerKey
) -> dict[str, int]:
    """Re-encrypt ``columns`` of every row of ``table`` in ``conn``'s transaction."""
    (pk,) = table.primary_key.columns
    query = select(pk, *columns).where(or_(*(c.is_not(None) for c in columns)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    counts = {f"{table.name}.{c.name}": 0 for c in columns}
    for row in conn.execute(query).all():
        values: dict[str, str] = {}
        for column, stored in zip(columns, row[1:], strict=True):
            if stored is None:
                continue
            try:
                values[column.name] = key.rotate(stored)
            except SecretKeyError as exc:
                raise SecretKeyError(
                    f"{table.name}.{column.name} of row {row[0]}: {exc.message}; "
                    f"nothing in {table.name} was changed",
                    code=exc.code,
                ) from None
            counts[f"{table.name}.{column.name}"] += 1
        conn.execute(update(table).where(and_(pk == row[0])).values(**values))
    return counts
