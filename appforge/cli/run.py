"""``appforge run``: run an app file or a Python flow here, or serve it.

A plain run goes through the run service of this process, wired like the
server's (the home's models, managed prompts and datasources), and stores
nothing. ``--session`` and ``--serve`` save the app in the home and run it
through the API started in this process, so sessions persist.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from appforge.cli.root import load_settings, main, open_home, report_error

if TYPE_CHECKING:
    from appforge.client import AppInfo, Client
    from apps_yaml.events import Event, Outcome
    from apps_yaml.flows import Flow
    from apps_yaml.schema import AppDocument, InputField
    from runs.services import Services


def _parse_inputs(pairs: tuple[str, ...], declared: dict[str, InputField]) -> dict[str, Any]:
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
        _through_api(obj, app_file, _ApiRun(inputs, as_json, session_id, serve, host, port))
        return
    flow = _load_flow(app_file) if app_file.suffix == ".py" else None
    doc = _document(app_file, flow)
    outcome = _run_here(obj, doc, flow, _parse_inputs(inputs, doc.input), as_json)
    if outcome.failure is not None:
        click.echo(f"error [{outcome.failure.code}]: {outcome.failure.message}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(outcome.output, ensure_ascii=False, indent=2))


def _document(app_file: Path, flow: Flow | None) -> AppDocument:
    """The app document of the file (for a flow: the app naming it).

    An invalid document raises (the root group prints it with its lines, exit 1)."""
    from apps_yaml.loader import load_file
    from apps_yaml.schema import AppDocument

    doc = AppDocument.model_validate(flow.app_document()) if flow else load_file(app_file)
    if flow is None and doc.flow is not None:
        click.echo(
            f"error [FLOW_NOT_SERVED]: {app_file.name} runs the Python flow "
            f"'{doc.flow}': run its flow file (appforge run flow.py)",
            err=True,
        )
        sys.exit(2)
    return doc


def _load_file(app_file: Path) -> AppDocument:
    from apps_yaml.loader import load_file

    return load_file(app_file)


def _run_here(
    obj: dict[str, Any], doc: AppDocument, flow: Flow | None, values: dict[str, Any], as_json: bool
) -> Outcome:
    """Run ``doc`` through this process's run service, printing its output as it comes."""
    from apps_yaml.errors import InputInvalidError
    from runs.service import RunService
    from runs.services import Services

    settings = load_settings()
    services = Services.open(
        settings,
        providers=obj.get("providers"),
        embedder=obj.get("embedder"),
        flows={flow.name: flow} if flow else None,
    )
    try:
        try:
            events = RunService(services).run_document(doc, values)
        except InputInvalidError as exc:
            report_error(exc)
            sys.exit(2)
        # The inputs are good: warn about missing datasources before the run starts.
        services.absent_datasources = _absent_datasources(services, doc)
        multi = flow is not None or len(doc.output) > 1
        return _print_events(events, as_json, multi)
    finally:
        services.close()


def _absent_datasources(services: Services, doc: AppDocument) -> frozenset[str]:
    """The datasources the app names that this home lacks, each with a warning on stderr.

    A local run of an app whose datasource is missing (an example app on a fresh
    home) still runs: its retrieval finds nothing, as an empty datasource would."""
    from sqlalchemy import or_, select

    from apps_yaml.schema import RetrieveStep
    from datasources.tables import Datasource

    named = {
        ref: step.id
        for step in doc.steps
        if isinstance(step, RetrieveStep)
        for ref in step.datasources
    }
    if not named:
        return frozenset()
    with services.db() as db:
        rows = db.execute(
            select(Datasource.uuid, Datasource.name).where(
                or_(Datasource.uuid.in_(named), Datasource.name.in_(named))
            )
        ).all()
    known = {value for row in rows for value in row}
    absent = frozenset(ref for ref in named if ref not in known)
    for ref in sorted(absent):
        click.echo(
            f"warning: no datasource '{ref}' in {services.settings.home}: step "
            f"'{named[ref]}' retrieves nothing (create it with: appforge datasources "
            f"create {ref}, then add entries)",
            err=True,
        )
    return absent


def _print_events(events: Iterator[Event], as_json: bool, multi: bool) -> Outcome:
    """Fold the run's events, printing output pieces as they arrive (unless as_json)."""
    from apps_yaml.events import Chunk, Outcome, Output

    outcome = Outcome()
    printer = _Printer(multi)
    for event in events:
        outcome.add(event)
        if not as_json and isinstance(event, Chunk | Output):
            printer.piece(event.key, event.text if isinstance(event, Chunk) else event.value)
    printer.end()
    return outcome


class _Printer:
    """Prints output pieces as they come; with several keys, each under ``[key]``."""

    def __init__(self, multi: bool) -> None:
        self.multi = multi
        self.current: str | None = None

    def piece(self, key: str, value: Any) -> None:
        if self.multi and key != self.current:
            click.echo(("\n" if self.current else "") + f"[{key}] ", nl=False)
        self.current = key
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        click.echo(text, nl=False)

    def end(self) -> None:
        if self.current is not None:
            click.echo()


# --- through the API of this process ----------------------------------------------------


@dataclass(frozen=True)
class _ApiRun:
    """What ``--session`` or ``--serve`` asked for."""

    inputs: tuple[str, ...]
    as_json: bool
    session_id: str | None
    serve: bool
    host: str
    port: int


def _through_api(obj: dict[str, Any], app_file: Path, how: _ApiRun) -> None:
    """Start the API in this process, save the app in it, then serve it or run it once.

    A flow (a .py file) is served by this process only: the API gets the loaded flow,
    and the saved app names it (``flow: <name>``)."""
    from appforge.client import ApiError, Client

    flow = _load_flow(app_file) if app_file.suffix == ".py" else None
    # Checked here first (bad YAML with its line); the server judges the rest.
    name = str(flow.app_document()["name"]) if flow else _load_file(app_file).name
    port = how.port if how.serve else _free_port()
    with _admin_token(app_file) as (token, temporary):
        with _api(obj, flow, how.host, port) as (base, thread):
            with Client(base, token) as client:
                try:
                    text = _flow_yaml(flow) if flow else app_file.read_text()
                    uuid = save_app(client, name, text).uuid
                    if how.serve:
                        click.echo(f"serving {app_file.name} as app {uuid}")
                        click.echo(f"run it: POST {base}/api/apps/{uuid}/run[/<session id>]")
                        if temporary:
                            click.echo(f"token (valid while this runs): {token}", err=True)
                        thread.join()
                        return
                    _stream_once(client, uuid, how.inputs, how.session_id, how.as_json)
                except ApiError as exc:
                    report_error(exc)
                    sys.exit(1 if exc.status >= 500 or exc.code == "TEMPLATE_ERROR" else 2)


@contextmanager
def _admin_token(app_file: Path) -> Iterator[tuple[str, bool]]:
    """The server's admin token, or one made for this command and revoked when it ends."""
    from api.auth import TokenSpec, create_token, revoke_token
    from appforge.core.db import session_factory, transaction

    settings = load_settings()
    if settings.admin_token is not None:
        yield settings.admin_token.get_secret_value(), False
        return
    engine, key = open_home(settings)
    db = session_factory(engine)
    with transaction(db) as session:
        spec = TokenSpec(f"appforge run {app_file.name}", role="admin")
        issued = create_token(session, spec, key)
    try:
        yield issued.value, True
    finally:
        with transaction(db) as session:
            revoke_token(session, issued.row.id)


@contextmanager
def _api(
    obj: dict[str, Any], flow: Flow | None, host: str, port: int
) -> Iterator[tuple[str, threading.Thread]]:
    """The API on ``host:port`` in a thread of this process, until the block ends."""
    import uvicorn

    from api.app import create_app

    app = create_app(
        load_settings(),
        providers=obj.get("providers"),
        embedder=obj.get("embedder"),
        flows={flow.name: flow} if flow is not None else None,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", proxy_headers=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise click.ClickException(f"the API could not start on {host}:{port}")
            thread.join(0.05)
        yield f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}", thread
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _stream_once(
    client: Client, uuid: str, inputs: tuple[str, ...], session_id: str | None, as_json: bool
) -> None:
    """Run the saved app once in ``session_id``, printing its output as it streams."""
    from appforge.client import StreamChunk, stitch
    from apps_yaml.schema import InputField

    definition = client.get_app(uuid).definition
    declared = {k: InputField.model_validate(v) for k, v in definition.get("input", {}).items()}
    values = _parse_inputs(inputs, declared)
    printer = _Printer("flow" in definition or len(definition.get("output", {})) > 1)
    chunks: list[StreamChunk] = []
    for chunk in client.stream(uuid, values, session_id):
        chunks.append(chunk)
        if not as_json:
            for key, piece in chunk.output.items():
                printer.piece(key, piece)
    if as_json:
        click.echo(json.dumps(stitch(chunks[:-1]), ensure_ascii=False, indent=2))
    else:
        click.echo()
    click.echo(f"session: {chunks[-1].session['id']}", err=True)


def save_app(client: Client, name: str, text: str) -> AppInfo:
    """Create the app, or update the app of the same name (a new version if it changed)."""
    same = [a for a in client.list_apps(q=name) if a.name == name]
    if same:
        return client.update_app(same[0].uuid, text)
    return client.create_app(text)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_flow(path: Path) -> Flow:
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


def _flow_yaml(flow: Flow) -> str:
    import yaml

    return yaml.safe_dump(flow.app_document(), sort_keys=False, allow_unicode=True)
