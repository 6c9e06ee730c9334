"""``appforge token``: manage API tokens on the database directly."""

from __future__ import annotations

import sys

import click

from appforge.cli.root import fail, main, open_db, open_engine, open_home


@main.group()
def token() -> None:
    """Manage API tokens (works on the database directly)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["admin", "editor", "viewer", "runner"]),
    default=None,
    help="What the token may do (default: editor).",
)
@click.option("--app", "apps", multiple=True, help="Narrow the token to this app (uuid or name).")
@click.option("--origin", "origins", multiple=True, help="Runner keys: a browser origin allowed.")
@click.option("--expires", default=None, help="When it stops working (ISO 8601).")
@click.option("--rate-limit", default=None, help='Its own rate limit, e.g. "60/minute".')
@click.option("--admin", is_flag=True, help="The same as --role admin.")
@click.option("--signed", is_flag=True, help="Require HMAC-signed requests with this token.")
def token_create(
    name: str,
    role: str | None,
    apps: tuple[str, ...],
    origins: tuple[str, ...],
    expires: str | None,
    rate_limit: str | None,
    admin: bool,
    signed: bool,
) -> None:
    """Create a token; its secret is printed once, here."""
    from pydantic import ValidationError

    from api.audit import COMMAND_LINE
    from api.auth import create_token
    from api.errors import ApiError
    from api.routes.tokens import TokenCreate, audit_token_created, token_spec
    from appforge.core.db import session_factory, transaction

    try:
        body = TokenCreate(
            name=name,
            role="admin" if admin else role,  # type: ignore[arg-type]
            apps=list(apps) or None,
            origins=list(origins) or None,
            expires_at=expires,  # type: ignore[arg-type]
            rate_limit=rate_limit,
            require_signature=signed,
        )
        engine, key = open_home()
        with transaction(session_factory(engine)) as db:
            issued = create_token(db, token_spec(db, body), key)
            audit_token_created(db, COMMAND_LINE, issued.row)
        value, signing_secret, token_id = issued.value, issued.signing_secret, issued.row.id
    except ValidationError as exc:
        problem = exc.errors()[0]
        fail("VALIDATION_ERROR", str(problem.get("msg", exc)), status=2)
    except ApiError as exc:
        fail(exc.code, exc.message, status=2)
    if signing_secret:
        click.echo(f"signing secret: {signing_secret}", err=True)
    click.echo(
        f"created token {token_id} ({body.role or 'editor'}): keep it safe, it is not shown again",
        err=True,
    )
    click.echo(value)


@token.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from api.auth import list_tokens

    with open_db()() as db:
        rows = list_tokens(db)
    click.echo(f"{'ID':36}  {'PREFIX':10}  {'NAME':20}  {'ROLE':6}  {'APPS':5}  STATUS")
    for t in rows:
        state = "revoked" if t.revoked_at else "active"
        scope = "all" if t.apps is None else str(len(t.apps))
        click.echo(f"{t.id:36}  {t.prefix:10}  {t.name[:20]:20}  {t.role:6}  {scope:5}  {state}")


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke a token by id (or by its shown prefix)."""
    from api.audit import COMMAND_LINE
    from api.auth import revoke_token
    from api.routes.tokens import audit_token_revoked
    from appforge.core.db import session_factory, transaction
    from appforge.core.invalidation import TOKENS, notify

    engine = open_engine()
    try:
        with transaction(session_factory(engine)) as db:
            row = revoke_token(db, token_id, audit_token_revoked(db, COMMAND_LINE))
            if row is None:
                click.echo(f"error [TOKEN_NOT_FOUND]: no token '{token_id}'", err=True)
                sys.exit(1)
            revoked = f"revoked {row.id} ({row.name})"
        notify(engine, TOKENS)  # running servers on PostgreSQL stop accepting it at once
    finally:
        engine.dispose()
    click.echo(revoked)
