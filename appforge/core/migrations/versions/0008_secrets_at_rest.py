"""secrets at rest: encrypted webhook and signing secrets, keyed token hashes

Webhook secrets (``webhooks.secret``) and request-signing secrets
(``tokens.signing_secret``) are encrypted with the server key (Fernet, see
appforge/core/keys.py); this migration encrypts the ones stored in plain text,
so it needs the key (``migrate(engine, server_key)``) when there are any.
Tokens get ``hash_scheme``: existing rows keep their unkeyed SHA-256 hash
(``sha256``), upgraded to HMAC-SHA256 (``hmac-sha256``) the first time the
token is used, since the token itself is needed to compute the new hash. The
``server_key`` table records the key's fingerprint.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from appforge.core.db import UTCDateTime, utcnow

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TOKENS = sa.table("tokens", sa.column("id", sa.String), sa.column("signing_secret", sa.Text))
_WEBHOOKS = sa.table("webhooks", sa.column("id", sa.String), sa.column("secret", sa.Text))
_KEY = sa.table(
    "server_key",
    sa.column("id", sa.Integer),
    sa.column("fingerprint", sa.String),
    sa.column("created_at", UTCDateTime),
)


def _server_key(needed: bool) -> Any:
    key = context.config.attributes.get("server_key")
    if key is None and needed:
        raise RuntimeError(
            "migration 0008 encrypts the stored webhook and signing secrets: run it with "
            "the server key (appforge.core.home.open_database, or migrate(engine, key))"
        )
    return key


def _secrets(conn: sa.Connection) -> list[tuple[sa.TableClause, sa.ColumnClause[Any], str, str]]:
    found: list[tuple[sa.TableClause, sa.ColumnClause[Any], str, str]] = []
    for table, column in ((_TOKENS, _TOKENS.c.signing_secret), (_WEBHOOKS, _WEBHOOKS.c.secret)):
        rows = conn.execute(sa.select(table.c.id, column).where(column.is_not(None)))
        found.extend((table, column, row[0], row[1]) for row in rows)
    return found


def _rewrite(conn: sa.Connection, transform: Any) -> None:
    for table, column, row_id, value in _secrets(conn):
        conn.execute(
            table.update().where(table.c.id == row_id).values({column.name: transform(value)})
        )


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("hash_scheme", sa.String(length=16), nullable=False, server_default="sha256")
        )
        batch_op.alter_column(
            "signing_secret", existing_type=sa.String(length=100), type_=sa.Text()
        )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.alter_column("hash_scheme", server_default=None)
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.alter_column("secret", existing_type=sa.String(length=200), type_=sa.Text())
    op.create_table(
        "server_key",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_key")),
    )
    conn = op.get_bind()
    key = _server_key(needed=bool(_secrets(conn)))
    if key is not None:
        _rewrite(conn, key.encrypt)
        # The ciphertexts above are this key's: record it in the same transaction.
        conn.execute(_KEY.insert().values(id=1, fingerprint=key.fingerprint, created_at=utcnow()))


def downgrade() -> None:
    conn = op.get_bind()
    key = _server_key(needed=bool(_secrets(conn)))
    if key is not None:
        _rewrite(conn, key.decrypt)
    op.drop_table("server_key")
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.alter_column("secret", existing_type=sa.Text(), type_=sa.String(length=200))
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.alter_column(
            "signing_secret", existing_type=sa.Text(), type_=sa.String(length=100)
        )
        batch_op.drop_column("hash_scheme")
