"""``appforge token``: manage API tokens on the database directly."""

from __future__ import annotations

import sys

import click

from appforge.cli.root import main, open_db


@main.group()
def token() -> None:
    """Manage API tokens (works on the database directly)."""


@token.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Allow managing tokens.")
@click.option("--signed", is_flag=True, help="Require HMAC-signed requests with this token.")
def token_create(name: str, admin: bool, signed: bool) -> None:
    """Create a token; its secret is printed once, here."""
    from api.auth import create_token
    from appforge.core.db import transaction

    with transaction(open_db()) as db:
        row, value = create_token(db, name, is_admin=admin, require_signature=signed)
        if row.signing_secret:
            click.echo(f"signing secret: {row.signing_secret}", err=True)
        click.echo(
            f"created token {row.id} ({'admin' if admin else 'user'}): keep it safe,"
            " it is not shown again",
            err=True,
        )
    click.echo(value)


@token.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from api.auth import list_tokens

    with open_db()() as db:
        rows = list_tokens(db)
    click.echo(f"{'ID':36}  {'PREFIX':10}  {'NAME':20}  {'ADMIN':5}  STATUS")
    for t in rows:
        state = "revoked" if t.revoked_at else "active"
        admin = "yes" if t.is_admin else "no"
        click.echo(f"{t.id:36}  {t.prefix:10}  {t.name[:20]:20}  {admin:5}  {state}")


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke a token by id (or by its shown prefix)."""
    from api.auth import revoke_token
    from appforge.core.db import transaction

    with transaction(open_db()) as db:
        row = revoke_token(db, token_id)
        if row is None:
            click.echo(f"error [TOKEN_NOT_FOUND]: no token '{token_id}'", err=True)
            sys.exit(1)
        click.echo(f"revoked {row.id} ({row.name})")
