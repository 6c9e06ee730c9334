"""The ``appforge`` command: thin commands that parse, call a domain function and print."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
@click.option("--ui-port", default=8501, show_default=True, type=int, help="Port of the builder.")
@click.option("--no-ui", is_flag=True, help="Start the API alone, without the builder.")
def serve(host: str, port: int, workers: int, ui_port: int, no_ui: bool) -> None:
    """Start the API server and the builder (Streamlit) beside it."""
    import uvicorn

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # HTTP clients log every request at INFO; our own INFO line per run/call is enough.
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    click.echo(f"appforge {__version__}: API on http://{host}:{port}/api (docs at /docs)")
    ui = None if no_ui else _start_builder(host, port, ui_port)
    if ui is not None:
        click.echo(f"appforge builder on http://{host}:{ui_port}")
        # uvicorn re-raises SIGTERM after its shutdown; exiting through Python (not the
        # default action) lets the finally below stop the builder too.
        signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    try:
        uvicorn.run(
            "api.app:from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
        )
    finally:
        if ui is not None:
            _stop(ui)


def _start_builder(host: str, port: int, ui_port: int) -> subprocess.Popen[bytes]:
    """``streamlit run builder/app.py`` as a child process, told where the API is."""
    spec = importlib.util.find_spec("builder")
    if spec is None or spec.origin is None:
        raise click.ClickException("the builder package is not installed")
    app = Path(spec.origin).parent / "app.py"
    api_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    # The builder never gets the admin token: whoever opens it signs in with their own.
    env = {k: v for k, v in os.environ.items() if k != "APPFORGE_ADMIN_TOKEN"}
    env["APPFORGE_URL"] = f"http://{api_host}:{port}"
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(ui_port), "--server.address", host,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


def _retriever(settings: Settings, doc: Any, embedder: Any) -> tuple[Any, Any]:
    """The datasources of the home (or database) for retrieve steps; none if the app has none."""
    if not any(step.kind == "retrieve" for step in doc.steps):
        return None, None
    from appforge.db import make_engine, migrate, session_factory
    from datasources.store import DatasourceStore, StoreRetriever

    db_engine = make_engine(settings.resolved_database_url())
    migrate(db_engine)
    store = DatasourceStore.open(settings, session_factory(db_engine), embedder)
    return StoreRetriever(store), db_engine


@main.command()
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "-i", "inputs", multiple=True, help="An input value as key=value.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole output as one JSON object.")
@click.option(
    "--session",
    "session_id",
    default=None,
    help="Continue this session (kept in the local database).",
)
@click.option("--serve", is_flag=True, help="Serve the app through the API instead of running it.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --serve.")
@click.option("--port", default=8000, show_default=True, type=int, help="With --serve.")
@click.pass_obj
def run(
    obj: dict[str, Any],
    app_file: Path,
    inputs: tuple[str, ...],
    as_json: bool,
    session_id: str | None,
    serve: bool,
    host: str,
    port: int,
) -> None:
    """Run an app file (YAML) or a flow (a .py file) locally, printing its output as it
    streams. With --session or --serve the app (for a flow: an app naming it) is saved
    in the local home (created, or updated by name) and runs through the API started in
    this process, so sessions persist."""
    if session_id or serve:
        _through_api(obj, app_file, inputs, as_json, session_id, serve, host, port)
        return
    from apps_yaml import engine
    from apps_yaml.errors import AppsYamlError
    from apps_yaml.inputs import check_input
    from apps_yaml.loader import load_file
    from providers.registry import ProviderRegistry

    settings = _settings()
    registry = ProviderRegistry(settings, providers=obj.get("providers"))
    db_engine: Any = None
    try:
        if app_file.suffix == ".py":
            flow = _load_flow(app_file)
            try:
                values = check_input(_flow_app(flow), _parse_inputs(inputs, flow.input))
            except AppsYamlError as exc:
                _report_app_error(exc)
                sys.exit(2)
            db_engine = _engine(settings)
            events = flow.run(values, _flow_deps(registry, db_engine))
            multi = True
        else:
            try:
                doc = load_file(app_file)
                values = check_input(doc, _parse_inputs(inputs, doc.input))
            except AppsYamlError as exc:
                _report_app_error(exc)
                sys.exit(2)
            if doc.flow is not None:
                click.echo(
                    f"error [FLOW_NOT_SERVED]: {app_file.name} runs the Python flow "
                    f"'{doc.flow}': run its flow file (appforge run flow.py)",
                    err=True,
                )
                sys.exit(2)
            retriever, db_engine = _retriever(settings, doc, obj.get("embedder"))
            deps = engine.Dependencies(models=registry, retriever=retriever)
            events = engine.run(doc, values, deps)
            multi = len(doc.output) > 1
        outcome = _print_events(events, as_json, multi)
    finally:
        registry.close()
        if db_engine is not None:
            db_engine.dispose()
    if outcome.failure is not None:
        click.echo(f"error [{outcome.failure.code}]: {outcome.failure.message}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(outcome.output, ensure_ascii=False, indent=2))


def _through_api(
    obj: dict[str, Any],
    app_file: Path,
    inputs: tuple[str, ...],
    as_json: bool,
    session_id: str | None,
    serve: bool,
    host: str,
    port: int,
) -> None:
    """Start the API in this process, save the app in it, then serve it or run it once.

    A flow (a .py file) is served by this process only: the API gets the loaded flow,
    and the saved app names it (``flow: <name>``)."""
    import threading

    import uvicorn

    from api.app import create_app
    from appforge.client import ApiError, Client, StreamChunk

    flow = _load_flow(app_file) if app_file.suffix == ".py" else None
    settings = _settings()
    if settings.admin_token is not None:
        token, temporary = settings.admin_token.get_secret_value(), None
    else:  # a token for this command only: revoked when it ends
        from api.auth import create_token
        from appforge.db import transaction

        with transaction(_db()) as db:
            row, token = create_token(db, f"appforge run {app_file.name}", is_admin=True)
            temporary = row.id
    if not serve:
        port = _free_port()
    app = create_app(
        settings,
        providers=obj.get("providers"),
        embedder=obj.get("embedder"),
        flows={flow.name: flow} if flow is not None else None,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise click.ClickException(f"the API could not start on {host}:{port}")
            thread.join(0.05)
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        with Client(base, token) as client:
            try:
                uuid = _save_app(client, _flow_yaml(flow) if flow else app_file.read_text())
                if serve:
                    click.echo(f"serving {app_file.name} as app {uuid}")
                    click.echo(f"run it: POST {base}/api/apps/{uuid}/run[/<session id>]")
                    if temporary is not None:
                        click.echo(f"token (valid while this runs): {token}", err=True)
                    thread.join()
                    return
                definition = client.get_app(uuid).definition
                values = _parse_inputs(inputs, _declared_inputs(definition))
                multi = "flow" in definition or len(definition.get("output", {})) > 1
                chunks: list[StreamChunk] = []
                current: str | None = None
                for chunk in client.stream(uuid, values, session_id):
                    chunks.append(chunk)
                    if as_json:
                        continue
                    for key, piece in chunk.output.items():
                        if multi and key != current:
                            click.echo(("\n" if current else "") + f"[{key}] ", nl=False)
                        current = key
                        text = piece if isinstance(piece, str) else json.dumps(piece)
                        click.echo(text, nl=False)
            except ApiError as exc:
                _report_app_error(exc)
                sys.exit(1 if exc.status >= 500 or exc.code == "TEMPLATE_ERROR" else 2)
        from appforge.client import stitch

        if as_json:
            click.echo(json.dumps(stitch(chunks[:-1]), ensure_ascii=False, indent=2))
        else:
            click.echo()
        click.echo(f"session: {chunks[-1].session['id']}", err=True)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        if temporary is not None:
            from api.auth import revoke_token
            from appforge.db import transaction

            with transaction(_db()) as db:
                revoke_token(db, temporary)


def _save_app(client: Any, text: str) -> str:
    """Create the app, or update the app of the same name (a new version if it changed)."""
    import yaml

    name = (yaml.safe_load(text) or {}).get("name") if text.strip() else None
    existing = [a for a in client.list_apps(q=name)] if isinstance(name, str) else []
    same = [a for a in existing if a.name == name]
    if same:
        return str(client.update_app(same[0].uuid, text).uuid)
    return str(client.create_app(text).uuid)


def _declared_inputs(definition: dict[str, Any]) -> dict[str, Any]:
    from apps_yaml.schema import InputField

    return {k: InputField.model_validate(v) for k, v in definition.get("input", {}).items()}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _report_app_error(exc: Any) -> None:
    click.echo(f"error [{exc.code}]: {exc.message}", err=True)
    for problem in exc.details.get("errors", []) if isinstance(exc.details, dict) else []:
        where = f"line {problem['line']}: " if problem.get("line") else ""
        click.echo(
            f"  {where}{problem.get('path') or problem.get('field')}: {problem['message']}",
            err=True,
        )


def _print_events(events: Any, as_json: bool, multi: bool) -> Any:
    """Fold the run's events, printing output pieces as they arrive (unless as_json)."""
    from apps_yaml import engine

    outcome = engine.Outcome()
    current: str | None = None
    for event in events:
        outcome.add(event)
        if as_json or not isinstance(event, engine.Chunk | engine.Output):
            continue
        if multi and event.key != current:
            click.echo(("\n" if current else "") + f"[{event.key}] ", nl=False)
        current = event.key
        text = event.text if isinstance(event, engine.Chunk) else event.value
        click.echo(
            text if isinstance(text, str) else json.dumps(text, ensure_ascii=False), nl=False
        )
    if current is not None:
        click.echo()
    return outcome


def _load_flow(path: Path) -> Any:
    """The Flow defined in a Python file (running it is a local, trusted action)."""
    import importlib.util

    from apps_yaml.flows import Flow

    spec = importlib.util.spec_from_file_location(f"appforge_flow_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"cannot load {path}", param_hint="APP_FILE")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flows = [v for v in vars(module).values() if isinstance(v, Flow)]
    if len(flows) != 1:
        raise click.BadParameter(
            f"{path} must define exactly one Flow (found {len(flows)})", param_hint="APP_FILE"
        )
    return flows[0]


def _flow_app(flow: Any) -> Any:
    """The app document naming ``flow`` (its inputs are checked against it)."""
    from apps_yaml.schema import AppDocument

    return AppDocument.model_validate(flow.app_document())


def _flow_yaml(flow: Any) -> str:
    import yaml

    return yaml.safe_dump(flow.app_document(), sort_keys=False, allow_unicode=True)


def _flow_deps(registry: Any, db_engine: Any) -> Any:
    from api.prompt_refs import StorePrompts
    from appforge.db import session_factory
    from apps_yaml.engine import Dependencies

    return Dependencies(models=registry, prompts=StorePrompts(session_factory(db_engine)))


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
@click.option("--signed", is_flag=True, help="Require HMAC-signed requests with this token.")
def token_create(name: str, admin: bool, signed: bool) -> None:
    """Create a token; its secret is printed once, here."""
    from api.auth import create_token
    from appforge.db import transaction

    with transaction(_db()) as db:
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


@main.command()
@click.option(
    "--filename",
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

    engine = _engine(_settings())
    doc = backups.export(engine, runs=runs, prompts=prompts)
    engine.dispose()
    filename.write_text(json.dumps(doc, ensure_ascii=False, indent=2))
    parts = [f"{len(doc['apps'])} apps", f"{len(doc['datasources'])} datasources"]
    if prompts:
        parts.append(f"{len(doc['prompts']['prompts'])} prompts")
    if runs:
        parts.append(f"{len(doc['runs'])} runs")
    click.echo(f"exported {', '.join(parts)} to {filename}")


@main.command()
@click.option(
    "--json_path",
    "json_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the backup.",
)
def backup(json_path: Path) -> None:
    """Write the whole database and stored files to one JSON file."""
    from appforge import backup as backups

    settings = _settings()
    engine = _engine(settings)
    doc = backups.dump(engine, settings.home)
    engine.dispose()
    json_path.write_text(json.dumps(doc, ensure_ascii=False))
    rows = sum(len(r) for r in doc["tables"].values())
    click.echo(f"backed up {rows} rows and {len(doc['files'])} files to {json_path}")


@main.command()
@click.option(
    "--json_path",
    "json_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file made by backup.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def restore(json_path: Path, yes: bool) -> None:
    """Replace the database and stored files with a backup; entries are embedded again."""
    from appforge import backup as backups

    settings = _settings()
    try:
        doc = json.loads(json_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        click.echo(f"error [BACKUP_INVALID]: {json_path} is not JSON: {exc}", err=True)
        sys.exit(2)
    engine = _engine(settings)
    problems = backups.check(doc, engine)
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
    counts = backups.load(doc, engine, settings.home)
    requeued = _requeue_entries(engine)
    engine.dispose()
    click.echo(
        f"restored {sum(counts.values())} rows and {len(doc.get('files', {}))} files; "
        f"{requeued} entries will be embedded again when the server starts"
    )


def _engine(settings: Settings) -> Any:
    from appforge.db import make_engine, migrate

    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    migrate(engine)
    return engine


def _requeue_entries(engine: Any) -> int:
    """Vectors are not in a backup: hand every entry to the ingestion worker again."""
    from sqlalchemy import update

    from datasources.models import Entry

    with engine.begin() as conn:
        result = conn.execute(
            update(Entry).values(
                status="pending",
                error=None,
                chunks_total=None,
                chunks_done=0,
                attempts=0,
                claim_token=None,
                lease_until=None,
            )
        )
    return int(result.rowcount)


# --- commands that talk to a running server through the Python client -------------


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


def _client(obj: dict[str, Any], url: str, token: str) -> Any:
    from appforge.client import Client

    # Tests hand over an HTTP transport bound to an in-process app.
    return Client(url, token, http=obj.get("http"))


@contextmanager
def _api_errors() -> Iterator[None]:
    """An API error ends the command: its code, message and problems on stderr, exit 1."""
    from appforge.client import ApiError

    try:
        yield
    except ApiError as exc:
        _report_app_error(exc)
        sys.exit(1)


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
    with _api_errors():
        for app in _client(obj, url, token).list_apps():
            click.echo(f"{app.uuid}  v{app.version:<3} {app.type:5} {app.name}")


@apps_cmd.command("create")
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_remote_options
@click.pass_obj
def apps_create(obj: dict[str, Any], app_file: Path, url: str, token: str) -> None:
    """Create an app from a YAML file; prints its uuid."""
    with _api_errors():
        app = _client(obj, url, token).create_app(app_file)
    click.echo(app.uuid)


@datasources_cmd.command("list")
@_remote_options
@click.pass_obj
def datasources_list(obj: dict[str, Any], url: str, token: str) -> None:
    """List datasources: uuid, type, name."""
    with _api_errors():
        for ds in _client(obj, url, token).list_datasources():
            click.echo(f"{ds['uuid']}  {ds['type']:6} {ds['name']}")


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
    with _api_errors():
        click.echo(_client(obj, url, token).create_datasource(name, kind)["uuid"])


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
    """Add every file of FOLDER (recursively) as an entry, with a progress bar."""
    from appforge.client import ApiError

    meta = dict(pair.partition("=")[::2] for pair in metadata)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    client = _client(obj, url, token)
    added, refused = 0, []
    with click.progressbar(files, label="adding entries", file=sys.stderr) as bar:
        for path in bar:
            try:
                client.add_entry(
                    datasource,
                    path.name,
                    file=path,
                    metadata={**meta, "path": str(path.relative_to(folder))},
                )
                added += 1
            except ApiError as exc:
                refused.append(f"{path}: [{exc.code}] {exc.message}")
    for line in refused:
        click.echo(f"  refused {line}", err=True)
    if wait and added:
        entries = client.wait_for_entries(datasource)
        failed = [e for e in entries if e["status"] == "failed"]
        for e in failed:
            click.echo(f"  failed {e['name']}: {e.get('error')}", err=True)
        click.echo(
            f"added {added} entries: {len(entries) - len(failed)} ready, "
            f"{len(failed)} failed, {len(refused)} refused"
        )
    else:
        click.echo(f"added {added} entries ({len(refused)} refused)")
    if refused:
        sys.exit(1)


@prompts_cmd.command("list")
@click.argument("use_case_id")
@_remote_options
@click.pass_obj
def prompts_list(obj: dict[str, Any], use_case_id: str, url: str, token: str) -> None:
    """List the prompts of a use case: id, name."""
    with _api_errors():
        for prompt in _client(obj, url, token).list_prompts(use_case_id):
            click.echo(f"{prompt['id']}  {prompt['name']}")


@prompts_cmd.command("promote")
@click.argument("prompt_id")
@click.argument("version", type=int)
@click.option("--label", default="production", show_default=True)
@_remote_options
@click.pass_obj
def prompts_promote(
    obj: dict[str, Any], prompt_id: str, version: int, label: str, url: str, token: str
) -> None:
    """Put LABEL on VERSION of a prompt (apps pinning the label follow)."""
    with _api_errors():
        _client(obj, url, token).promote(prompt_id, version, label)
    click.echo(f"{label} -> version {version}")
