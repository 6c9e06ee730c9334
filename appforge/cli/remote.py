"""Commands that talk to a running server through the Python client."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from appforge.cli.root import main

if TYPE_CHECKING:
    from appforge.client import Client
    from appforge.client.prompt_models import PromptInfo, UseCaseInfo

T = TypeVar("T")


def _remote_options(f: Any) -> Any:
    f = click.option(
        "--url",
        envvar="APPFORGE_URL",
        default="http://127.0.0.1:8000",
        show_default=True,
        help="The API (or APPFORGE_URL).",
    )(f)
    return click.option(
        "--token", envvar="APPFORGE_TOKEN", required=True, help="API token (or APPFORGE_TOKEN)."
    )(f)


def connect(obj: dict[str, Any], url: str, token: str) -> Client:
    """A client of the server at ``url``."""
    from appforge.client import Client

    # Tests hand over an HTTP transport bound to an in-process app.
    return Client(url, token, http=obj.get("http"))


def _named(kind: str, ref: str, rows: list[tuple[str, str]]) -> str:
    """The id of the row whose id or name is ``ref`` (``rows`` as (id, name) pairs)."""
    from appforge.client import NotFoundError

    if any(row_id == ref for row_id, _ in rows):
        return ref
    found = [row_id for row_id, name in rows if name == ref]
    if len(found) == 1:
        return found[0]
    if found:
        raise click.UsageError(f"{len(found)} {kind}s are named {ref!r}: give the id")
    code = f"{kind.upper().replace(' ', '_')}_NOT_FOUND"
    raise NotFoundError(404, code, f"no {kind} {ref!r} (by id or name)")


def _datasource(client: Client, ref: str) -> str:
    """A datasource's uuid from its uuid or name."""
    return _named("datasource", ref, [(d.uuid, d.name) for d in client.list_datasources()])


def _every(page: Callable[[int], list[T]], size: int = 100) -> Iterator[T]:
    """Every row of a listing read ``size`` at a time (``page(skip)``)."""
    skip = 0
    while True:
        rows = page(skip)
        yield from rows
        if len(rows) < size:
            return
        skip += size


def _use_cases(client: Client) -> list[UseCaseInfo]:
    return list(_every(lambda skip: client.list_use_cases(skip=skip, limit=100)))


def _use_case(client: Client, ref: str) -> str:
    """A use case's id from its id or name."""
    return _named("use case", ref, [(u.id, u.name) for u in _use_cases(client)])


def _prompt(client: Client, ref: str) -> str:
    """A prompt's id from its id or its name (unique across use cases)."""
    rows: list[tuple[str, str]] = []
    for use_case in _use_cases(client):
        prompts = _every(partial(_prompts_page, client, use_case.id))
        rows.extend((p.id, p.name) for p in prompts)
    return _named("prompt", ref, rows)


def _prompts_page(client: Client, use_case_id: str, skip: int) -> list[PromptInfo]:
    return client.list_prompts(use_case_id, skip=skip, limit=100)


def _remote(name: str, help: str) -> click.Group:
    group = click.Group(name, help=help)
    main.add_command(group)
    return group


apps_cmd = _remote("apps", "Apps on a running server.")
datasources_cmd = _remote("datasources", "Datasources on a running server.")
prompts_cmd = _remote("prompts", "Managed prompts on a running server.")


@apps_cmd.command("list")
@_remote_options
@click.pass_obj
def apps_list(obj: dict[str, Any], url: str, token: str) -> None:
    """List apps: uuid, version, type, name."""
    for app in connect(obj, url, token).list_apps():
        click.echo(f"{app.uuid}  v{app.version:<3} {app.type:5} {app.name}")


@apps_cmd.command("create")
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_remote_options
@click.pass_obj
def apps_create(obj: dict[str, Any], app_file: Path, url: str, token: str) -> None:
    """Create an app from a YAML file; prints its uuid."""
    app = connect(obj, url, token).create_app(app_file)
    click.echo(app.uuid)


@datasources_cmd.command("list")
@_remote_options
@click.pass_obj
def datasources_list(obj: dict[str, Any], url: str, token: str) -> None:
    """List datasources: uuid, type, name."""
    for ds in connect(obj, url, token).list_datasources():
        click.echo(f"{ds.uuid}  {ds.type:6} {ds.name}")


@datasources_cmd.command("create")
@click.argument("name")
@click.option(
    "--type",
    "kind",
    default="mixed",
    show_default=True,
    type=click.Choice(["text", "url", "file", "mixed"]),
)
@_remote_options
@click.pass_obj
def datasources_create(obj: dict[str, Any], name: str, kind: str, url: str, token: str) -> None:
    """Create a datasource; prints its uuid."""
    click.echo(connect(obj, url, token).create_datasource(name, kind).uuid)


@datasources_cmd.command("add")
@click.argument("datasource")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--metadata", "-m", multiple=True, help="key=value on every entry.")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait until every entry is embedded."
)
@_remote_options
@click.pass_obj
def datasources_add(
    obj: dict[str, Any],
    datasource: str,
    folder: Path,
    metadata: tuple[str, ...],
    wait: bool,
    url: str,
    token: str,
) -> None:
    """Add every file of FOLDER (recursively) as an entry of DATASOURCE (uuid or name),
    with a progress bar."""
    from appforge.client import ApiError

    meta = dict(pair.partition("=")[::2] for pair in metadata)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    client = connect(obj, url, token)
    datasource = _datasource(client, datasource)
    added, refused = 0, []
    with click.progressbar(files, label="adding entries", file=sys.stderr) as bar:
        for path in bar:
            try:
                # Multipart, streamed from the file: no base64 body over the body limit.
                client.upload_entry(
                    datasource,
                    path,
                    name=path.name,
                    metadata={**meta, "path": str(path.relative_to(folder))},
                )
                added += 1
            except ApiError as exc:
                refused.append(f"{path}: [{exc.code}] {exc.message}")
    for line in refused:
        click.echo(f"  refused {line}", err=True)
    if wait and added:
        entries = client.wait_for_entries(datasource)
        failed = [e for e in entries if e.status == "failed"]
        for e in failed:
            click.echo(f"  failed {e.name}: {e.error}", err=True)
        click.echo(
            f"added {added} entries: {len(entries) - len(failed)} ready, "
            f"{len(failed)} failed, {len(refused)} refused"
        )
    else:
        click.echo(f"added {added} entries ({len(refused)} refused)")
    if refused:
        sys.exit(1)


@prompts_cmd.command("list")
@click.argument("use_case")
@_remote_options
@click.pass_obj
def prompts_list(obj: dict[str, Any], use_case: str, url: str, token: str) -> None:
    """List the prompts of a use case (id or name): id, name."""
    client = connect(obj, url, token)
    for prompt in client.list_prompts(_use_case(client, use_case)):
        click.echo(f"{prompt.id}  {prompt.name}")


@prompts_cmd.command("promote")
@click.argument("prompt")
@click.argument("version", type=int)
@click.option("--label", default="production", show_default=True)
@_remote_options
@click.pass_obj
def prompts_promote(
    obj: dict[str, Any], prompt: str, version: int, label: str, url: str, token: str
) -> None:
    """Put LABEL on VERSION of a prompt (id or name; apps pinning the label follow)."""
    client = connect(obj, url, token)
    client.promote(_prompt(client, prompt), version, label)
    click.echo(f"{label} -> version {version}")
