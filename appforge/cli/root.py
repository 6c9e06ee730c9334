"""The root command and what every command group shares: settings, the database, errors.

Errors end a command in one place, :class:`ErrorsAsLines` (the root group): an
error of appforge or of the server, an unreachable server, a bad or missing
file, or bad YAML prints one line ``error [CODE]: message`` on stderr and exits
1. ``appforge --debug ...`` lets them through with their traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from appforge import __version__
from appforge.core.settings import Settings


def load_settings() -> Settings:
    """The settings of this invocation: ``APPFORGE_*`` variables, and ``--home`` if given."""
    home = _options().get("home")
    return Settings(home=home) if home is not None else Settings()


def _options() -> dict[str, Any]:
    """The root group's ``ctx.obj`` (``home``, ``debug``, parts tests hand over)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, dict) else {}


def error_line(exc: BaseException) -> str | None:
    """The one line an expected error ends a command with; None for a bug (a traceback)."""
    import httpx
    import yaml

    from appforge.client import ApiError
    from appforge.core.db import read_only, storage_full
    from appforge.core.errors import AppforgeError, StorageFullError, StorageReadOnlyError

    if isinstance(exc, AppforgeError | ApiError):
        return f"error [{exc.code}]: {exc.message}"
    if storage_full(exc) and not isinstance(exc, OSError):  # "database or disk is full"
        full = StorageFullError()
        return f"error [{full.code}]: {full.message}"
    if read_only(exc) and not isinstance(exc, OSError):  # a readonly database, a standby
        refused = StorageReadOnlyError()
        return f"error [{refused.code}]: {refused.message}"
    if isinstance(exc, httpx.TransportError):
        return f"error [SERVER_UNREACHABLE]: {_unreachable(exc)}"
    if isinstance(exc, httpx.HTTPError):
        return f"error [HTTP_ERROR]: {exc}"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"error [YAML_INVALID]: line {exc.problem_mark.line + 1}: {exc.problem}"
    if isinstance(exc, yaml.YAMLError):
        return f"error [YAML_INVALID]: {' '.join(str(exc).split())}"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"error [FILE_ERROR]: {exc.strerror or exc}{where}"
    if isinstance(exc, UnicodeDecodeError):
        return f"error [FILE_ERROR]: not UTF-8 text ({exc.reason} at byte {exc.start})"
    return None


def _unreachable(exc: Any) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # no request attached
        return f"cannot reach the server: {exc}"
    server = f"{url.scheme}://{url.netloc.decode()}"
    return f"cannot reach the server at {server} ({exc or type(exc).__name__}); is it running?"


def _set_home(ctx: click.Context, _: click.Parameter, value: Path | None) -> None:
    if value is not None:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["home"] = value.expanduser().resolve()


_HOME_HELP = "The appforge home folder (instead of APPFORGE_HOME) for this command."


def _home_option() -> click.Option:
    """``--home`` after a command's name, as before it (``appforge token list --home H``)."""
    return click.Option(
        ["--home"],
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        callback=_set_home,
        help=_HOME_HELP,
    )


def _with_home(command: click.Command) -> click.Command:
    """Give ``command`` (each command of a group) a ``--home`` option, once."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_home(sub)
    elif not any(param.name == "home" for param in command.params):
        command.params.append(_home_option())
    return command


class ErrorsAsLines(click.Group):
    """The root group: commands end on an expected error with one line and exit code 1,
    and each takes ``--home`` after its name too."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        return _with_home(command) if command is not None else None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            if _options().get("debug") or not isinstance(
                getattr(exc.param, "type", None), click.Path
            ):
                raise
            click.echo(f"error [FILE_ERROR]: {exc.format_message()}", err=True)
            ctx.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            line = error_line(exc)
            if line is None or _options().get("debug"):
                raise
            click.echo(line, err=True)
            _problems(getattr(exc, "details", None), line)
            ctx.exit(1)


class QuietAliases(click.Option):
    """An option whose first name is shown in help; the others (old spellings) still work."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown = self.opts
        self.opts = shown[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


@click.group(cls=ErrorsAsLines)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=_HOME_HELP,
)
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def main(ctx: click.Context, home: Path | None, debug: bool) -> None:
    """appforge: low-code LLM apps (YAML apps, prompts, datasources, a streaming runtime)."""
    # ctx.obj may carry ready parts (tests pass {"providers": {...}} to share a loaded model).
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if home is not None:
        ctx.obj["home"] = home.expanduser().resolve()


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
    _problems(exc.details, exc.message)


def _problems(details: Any, shown: str = "") -> None:
    """The problems of an invalid document or input, one per line under the error
    (but not one the error's own message already says)."""
    for problem in details.get("errors", []) if isinstance(details, dict) else []:
        where = f"line {problem['line']}: " if problem.get("line") else ""
        field = problem.get("path") or problem.get("field")
        line = f"{where}{field + ': ' if field else ''}{problem['message']}"
        if problem["message"] not in shown:
            click.echo(f"  {line}", err=True)


def fail(code: str, message: str, status: int = 1) -> NoReturn:
    """End the command: ``error [CODE]: message`` on stderr and exit ``status``."""
    click.echo(f"error [{code}]: {message}", err=True)
    sys.exit(status)


def shared_vector_store(config: Settings, what: str) -> None:
    """End the command when ``what`` would put a second process on an embedded Chroma.

    An embedded Chroma's index lives in the memory of the process that opened it:
    what one process adds, another does not find (its count sees it, its searches do
    not), and each writes its own index back to the files. Processes that share
    datasources share a Chroma server."""
    if config.chroma_url:
        return
    fail(
        "CHROMA_SERVER_REQUIRED",
        f"{what} needs a Chroma server that every process shares (APPFORGE_CHROMA_URL): "
        "an embedded Chroma's index lives in the memory of the one process that opened "
        "it, and the others would not find what it adds. Serve the same files with "
        f"`chroma run --path {config.home / 'chroma'} --port 8001` and set "
        "APPFORGE_CHROMA_URL=http://127.0.0.1:8001 (docs/deploy.md)",
        status=2,
    )
