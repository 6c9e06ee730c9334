"""The ``appforge`` command: thin commands that parse, call a domain function and print."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from appforge import __version__
from appforge.settings import Settings


def _settings() -> Settings:
    return Settings()


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """appforge: low-code LLM apps (YAML apps, prompts, datasources, a streaming runtime)."""
    # ctx.obj may carry ready parts (tests pass {"providers": {...}} to share a loaded model).
    ctx.ensure_object(dict)


@main.command()
def version() -> None:
    """Print the installed version."""
    click.echo(f"appforge {__version__}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port of the API.")
@click.option("--workers", default=1, show_default=True, type=int, help="API processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Start the API server."""
    import uvicorn

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    click.echo(f"appforge {__version__}: API on http://{host}:{port}/api (docs at /docs)")
    uvicorn.run(
        "api.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
    )


def _parse_inputs(pairs: tuple[str, ...], declared: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="--input")
        field = declared.get(key)
        if field is not None and field.type != "string":
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise click.BadParameter(
                    f"{key} must be {field.type} (JSON), got {raw!r}", param_hint="--input"
                ) from exc
        else:
            values[key] = raw
    return values


@main.command()
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "-i", "inputs", multiple=True, help="An input value as key=value.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole output as one JSON object.")
@click.pass_obj
def run(obj: dict[str, Any], app_file: Path, inputs: tuple[str, ...], as_json: bool) -> None:
    """Run an app file locally, printing its output as it streams."""
    from apps_yaml import engine
    from apps_yaml.errors import AppsYamlError
    from apps_yaml.inputs import check_input
    from apps_yaml.loader import load_file
    from providers.registry import ProviderRegistry

    settings = _settings()
    try:
        doc = load_file(app_file)
        values = check_input(doc, _parse_inputs(inputs, doc.input))
    except AppsYamlError as exc:
        click.echo(f"error [{exc.code}]: {exc.message}", err=True)
        for problem in exc.details.get("errors", []) if isinstance(exc.details, dict) else []:
            where = f"line {problem['line']}: " if problem.get("line") else ""
            click.echo(
                f"  {where}{problem.get('path') or problem.get('field')}: {problem['message']}",
                err=True,
            )
        sys.exit(2)
    registry = ProviderRegistry(settings, providers=obj.get("providers"))
    outcome = engine.Outcome()
    current: str | None = None
    multi = len(doc.output) > 1
    try:
        for event in engine.run(doc, values, engine.Dependencies(models=registry)):
            outcome.add(event)
            if as_json:
                continue
            if isinstance(event, engine.Chunk | engine.Output):
                if multi and event.key != current:
                    click.echo(("\n" if current else "") + f"[{event.key}] ", nl=False)
                current = event.key
                text = event.text if isinstance(event, engine.Chunk) else event.value
                if not isinstance(text, str):
                    text = json.dumps(text, ensure_ascii=False)
                click.echo(text, nl=False)
    finally:
        registry.close()
    if outcome.failure is not None:
        if current is not None:
            click.echo()
        click.echo(f"error [{outcome.failure.code}]: {outcome.failure.message}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(outcome.output, ensure_ascii=False, indent=2))
    else:
        click.echo()


@main.group()
def token() -> None:
    """Manage API tokens (works on the database directly)."""


def _db() -> Any:
    from appforge.db import make_engine, migrate, session_factory

    settings = _settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    return session_factory(engine)


@token.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Allow managing tokens.")
def token_create(name: str, admin: bool) -> None:
    """Create a token; its secret is printed once, here."""
    from api.auth import create_token
    from appforge.db import transaction

    with transaction(_db()) as db:
        row, value = create_token(db, name, is_admin=admin)
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

    with _db()() as db:
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
    from appforge.db import transaction

    with transaction(_db()) as db:
        row = revoke_token(db, token_id)
        if row is None:
            click.echo(f"error [TOKEN_NOT_FOUND]: no token '{token_id}'", err=True)
            sys.exit(1)
        click.echo(f"revoked {row.id} ({row.name})")
