"""``appforge run``: run an app file or a Python flow here, or serve it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from appforge.cli.root import load_settings, main, open_db, open_engine, report_error
from appforge.core.settings import Settings


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
    from appforge.core.db import make_engine, migrate, session_factory
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

    settings = load_settings()
    registry = ProviderRegistry(settings, providers=obj.get("providers"))
    db_engine: Any = None
    try:
        if app_file.suffix == ".py":
            flow = _load_flow(app_file)
            try:
                values = check_input(_flow_app(flow), _parse_inputs(inputs, flow.input))
            except AppsYamlError as exc:
                report_error(exc)
                sys.exit(2)
            db_engine = open_engine(settings)
            events = flow.run(values, _flow_deps(registry, db_engine))
            multi = True
        else:
            try:
                doc = load_file(app_file)
                values = check_input(doc, _parse_inputs(inputs, doc.input))
            except AppsYamlError as exc:
                report_error(exc)
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
    settings = load_settings()
    if settings.admin_token is not None:
        token, temporary = settings.admin_token.get_secret_value(), None
    else:  # a token for this command only: revoked when it ends
        from api.auth import create_token
        from appforge.core.db import transaction

        with transaction(open_db()) as db:
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
                report_error(exc)
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
            from appforge.core.db import transaction

            with transaction(open_db()) as db:
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
    from appforge.core.db import session_factory
    from apps_yaml.engine import Dependencies
    from runs.prompt_refs import StorePrompts

    return Dependencies(models=registry, prompts=StorePrompts(session_factory(db_engine)))
