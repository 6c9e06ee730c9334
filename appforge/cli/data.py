"""``appforge export``, ``backup`` and ``restore``: the home as one JSON document."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appforge.cli.root import QuietAliases, load_settings, main, open_engine, open_home
from appforge.core.modes import write_private


@main.command()
@click.option(
    "--json-path",
    "--filename",
    "filename",
    cls=QuietAliases,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the export.",
)
@click.option("--runs", is_flag=True, help="Include the runs.")
@click.option("--prompts", is_flag=True, help="Include prompts with all versions and labels.")
def export(filename: Path, runs: bool, prompts: bool) -> None:
    """Export apps (as YAML), datasources with entries and metadata, optionally prompts
    and runs, into one JSON document."""
    from appforge import backup as backups

    engine = open_engine()
    doc = backups.export(engine, runs=runs, prompts=prompts)
    engine.dispose()
    write_private(filename, backups.encode(doc, indent=2))
    parts = [f"{len(doc['apps'])} apps", f"{len(doc['datasources'])} datasources"]
    if prompts:
        parts.append(f"{len(doc['prompts']['prompts'])} prompts")
    if runs:
        parts.append(f"{len(doc['runs'])} runs")
    click.echo(f"exported {', '.join(parts)} to {filename}")


@main.command()
@click.option(
    "--json-path",
    "--json_path",
    "json_path",
    cls=QuietAliases,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the backup.",
)
def backup(json_path: Path) -> None:
    """Write the whole database and stored files to one JSON file."""
    from appforge import backup as backups

    settings = load_settings()
    engine = open_engine(settings)
    written = backups.Written()
    try:
        # 0600 whatever the umask: a backup holds every transcript (secrets stay
        # encrypted). Written as it is read, and whole or not at all.
        write_private(json_path, backups.document(engine, settings.home, written))
    finally:
        engine.dispose()
    click.echo(f"backed up {written.rows} rows and {written.files} files to {json_path}")


@main.command()
@click.option(
    "--json-path",
    "--json_path",
    "json_path",
    cls=QuietAliases,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file made by backup.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def restore(json_path: Path, yes: bool) -> None:
    """Replace the database and stored files with a backup; entries are embedded again."""
    from appforge import backup as backups
    from datasources.updates import requeue_all

    settings = load_settings()
    engine, key = open_home(settings)
    try:
        try:
            problems = backups.check(json_path, engine, key)  # read as it is parsed
        except backups.BackupError as exc:
            click.echo(f"error [BACKUP_INVALID]: {json_path} is {exc}", err=True)
            sys.exit(2)
        if problems:
            click.echo("error [BACKUP_INVALID]: nothing was restored:", err=True)
            for problem in problems:
                click.echo(f"  {problem}", err=True)
            sys.exit(2)
        if not backups.is_empty(engine) and not yes:
            click.confirm(
                f"This replaces everything in {settings.home} with the backup. Continue?",
                abort=True,
                err=True,
            )
        counts, files = backups.load(json_path, engine, settings.home, key)
        requeued = requeue_all(engine)
    finally:
        engine.dispose()
    click.echo(
        f"restored {sum(counts.values())} rows and {files} files; "
        f"{requeued} entries will be embedded again when the server starts"
    )
