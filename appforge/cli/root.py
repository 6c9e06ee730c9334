"""The root command and what every command group shares: settings, the database, errors."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from appforge import __version__
from appforge.core.settings import Settings


def load_settings() -> Settings:
    """The settings of this invocation, from ``APPFORGE_*`` variables."""
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


def open_home(config: Settings | None = None) -> tuple[Any, Any]:
    """The migrated database engine of the home (or of ``APPFORGE_DATABASE_URL``) and
    the server key; a missing or wrong key ends the command with its error."""
    from appforge.core.home import open_database
    from appforge.core.keys import SecretKeyError

    try:
        return open_database(config or load_settings())
    except SecretKeyError as exc:
        fail(exc.code, exc.message)


def open_engine(config: Settings | None = None) -> Any:
    """The migrated database engine of the home (or of ``APPFORGE_DATABASE_URL``)."""
    return open_home(config)[0]


def open_db() -> Any:
    """A session factory on the migrated database."""
    from appforge.core.db import session_factory

    return session_factory(open_engine())


def report_error(exc: Any) -> None:
    """An error with a code on stderr: ``error [CODE]: message``, then each problem."""
    click.echo(f"error [{exc.code}]: {exc.message}", err=True)
    for problem in exc.details.get("errors", []) if isinstance(exc.details, dict) else []:
        where = f"line {problem['line']}: " if problem.get("line") else ""
        click.echo(
            f"  {where}{problem.get('path') or problem.get('field')}: {problem['message']}",
            err=True,
        )


def fail(code: str, message: str, status: int = 1) -> NoReturn:
    """End the command: ``error [CODE]: message`` on stderr and exit ``status``."""
    click.echo(f"error [{code}]: {message}", err=True)
    sys.exit(status)
