"""``appforge eval``: evaluate an app file over a case file, here or on a server, for CI.

Prints a table (one row per case, one column per scorer) and the summary, and
exits 1 when the pass rate is below ``--min-pass-rate`` (or the evaluation on
the server did not end ``done``). ``--json`` writes the whole result;
``--compare`` reads an earlier one and lists the cases that regressed (passed
then, fail now) and improved. With ``--server`` the server stores and runs it
(``appforge.cli.eval_server``); the output is the same.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import yaml

from appforge.cli.root import fail, load_settings, main

if TYPE_CHECKING:
    from appforge.client import Scorer
    from evals.casefiles import CaseData
    from evals.local import LocalEvaluation
    from evals.scorers import ScorerSpec


def _cases(path: Path, limit: int) -> list[CaseData]:
    from evals.casefiles import read_csv, read_jsonl

    text = path.read_text(encoding="utf-8-sig")
    return read_csv(text, limit) if path.suffix.lower() == ".csv" else read_jsonl(text, limit)


def _scorers(path: Path) -> list[ScorerSpec]:
    from pydantic import ValidationError

    from evals.scorers import ScorerSpec

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("scorers")
    if not isinstance(data, list):
        raise click.BadParameter("a list of scorers (or scorers: [...])", param_hint="--scorers")
    try:
        return [ScorerSpec.model_validate(item) for item in data]
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--scorers") from None


def _cell(score: dict[str, Any] | None) -> str:
    if score is None:  # a case the evaluation did not get to (it was cancelled)
        return "-"
    return f"{score['score']:.2f}{'' if score['passed'] else '!'}"


def _table(done: LocalEvaluation, scorers: list[ScorerSpec]) -> None:
    names = [s.key for s in scorers]
    click.echo("\t".join(["case", "passed", *names]))
    for case in done.cases:
        by_name = {s["scorer"]: s for s in case.scores or []}
        cells = [_cell(by_name.get(n)) for n in names]
        passed = "-" if case.status != "done" else "yes" if case.passed else "no"
        click.echo("\t".join([case.case_id, passed, *cells]))
    summary = done.summary
    rate = summary["pass_rate"]
    click.echo(
        f"pass rate {rate if rate is not None else 0:.2%} ({summary['cases_passed']}/"
        f"{len(done.cases)}); latency p50 {summary['latency_ms']['p50']} ms, "
        f"p95 {summary['latency_ms']['p95']} ms; tokens {summary['tokens']['total']}"
    )


def _compare(done: LocalEvaluation, previous: Path) -> None:
    from evals.local import LocalCase
    from evals.summary import compare

    earlier = json.loads(previous.read_text(encoding="utf-8"))
    before = [LocalCase.of(c) for c in earlier.get("results", [])]
    compared = compare(before, done.cases)
    click.echo(f"regressed: {', '.join(compared['regressed']) or 'none'}")
    click.echo(f"improved: {', '.join(compared['improved']) or 'none'}")
    delta = compared["aggregate"]["pass_rate"]["delta"]
    if delta is not None:
        click.echo(f"pass rate delta: {delta:+.2%}")


def _server_options(f: Any) -> Any:
    options = [
        click.option(
            "--server", help="Run it on this server (its base URL), which stores the result."
        ),
        click.option(
            "--token", envvar="APPFORGE_TOKEN", help="With --server: API token (or APPFORGE_TOKEN)."
        ),
        click.option(
            "--app", "app_ref", help="With --server: an app there (name or uuid), not a file."
        ),
        click.option(
            "--dataset",
            help="With --server: the dataset's name (default: the case file's, no suffix).",
        ),
        click.option(
            "--concurrency", type=click.IntRange(1), help="With --server: cases run at once."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@dataclass(frozen=True)
class Where:
    """Where the evaluation runs: here (no server), or on a server."""

    server: str | None
    token: str | None
    app_ref: str | None
    dataset: str | None
    concurrency: int | None


def _files(files: tuple[Path, ...], where: Where) -> tuple[Path | None, Path]:
    """The app file (None with --app) and the case file; bad combinations are usage errors."""
    if where.server is None:
        # Not --token: APPFORGE_TOKEN may well be set where local runs are made too.
        given: dict[str, object] = {
            "--app": where.app_ref,
            "--dataset": where.dataset,
            "--concurrency": where.concurrency,
        }
        named = [option for option, value in given.items() if value is not None]
        if named:
            raise click.UsageError(f"{', '.join(named)} only with --server")
    elif not where.token:
        raise click.UsageError("--server needs --token (or APPFORGE_TOKEN)")
    wanted = 1 if where.app_ref else 2
    if len(files) != wanted:
        shape = "CASES_FILE with --app" if where.app_ref else "APP_FILE CASES_FILE"
        raise click.UsageError(f"give {shape} ({len(files)} files given)")
    return (None, files[0]) if where.app_ref else (files[0], files[1])


def _here(
    obj: dict[str, Any], app_file: Path, cases_file: Path, scorers: list[ScorerSpec]
) -> LocalEvaluation:
    from apps_yaml.loader import load_file
    from evals.local import evaluate as run_cases
    from evals.scorers import check_scorers
    from runs.service import RunService
    from runs.services import Services

    settings = load_settings()
    doc = load_file(app_file)
    cases = _cases(cases_file, settings.evals.max_cases_per_dataset)
    check_scorers(scorers, settings.evals)
    services = Services.open(settings, providers=obj.get("providers"), embedder=obj.get("embedder"))
    try:
        return run_cases(RunService(services), doc, cases, scorers)
    finally:
        services.close()


def _there(
    obj: dict[str, Any],
    where: Where,
    app_file: Path | None,
    cases_file: Path,
    scorers: list[ScorerSpec],
) -> LocalEvaluation:
    from appforge.cli.eval_server import Remote, evaluate
    from appforge.cli.remote import connect

    assert where.server is not None and where.token is not None
    remote = Remote(
        connect(obj, where.server, where.token),
        app_file,
        where.app_ref,
        where.dataset or cases_file.stem,
        where.concurrency,
    )
    # Checked by ScorerSpec already: each dump is a Scorer (the server checks it again).
    sent = [cast("Scorer", s.model_dump(exclude_none=True)) for s in scorers]
    return evaluate(remote, cases_file, sent)


def _ended_badly(evaluation: dict[str, Any] | None) -> None:
    """End the command if the server's evaluation ended other than ``done``."""
    if evaluation is None or evaluation["status"] == "done":
        return
    status = evaluation["status"]
    error = evaluation.get("error") or {
        "code": f"EVALUATION_{status.upper()}",
        "message": f"it ended {status}",
    }
    fail(error["code"], f"evaluation {evaluation['id']}: {error['message']}")


@main.command(name="eval")
@click.argument(
    "files",
    nargs=-1,
    metavar="[APP_FILE] CASES_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--scorers",
    "scorers_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A YAML list of scorers.",
)
@click.option("--min-pass-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the result."
)
@click.option(
    "--compare",
    "previous",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An earlier --json result: show what regressed and improved.",
)
@_server_options
@click.pass_obj
def evaluate(
    obj: dict[str, Any],
    files: tuple[Path, ...],
    scorers_file: Path,
    min_pass_rate: float,
    json_out: Path | None,
    previous: Path | None,
    **server: Any,
) -> None:
    """Evaluate an app file (YAML) over a case file (JSONL or .csv): here, storing nothing,
    or with --server on that server (the app saved by its name, or --app; the cases as a
    dataset); exit 1 when the pass rate is below --min-pass-rate."""
    where = Where(**server)
    app_file, cases_file = _files(files, where)
    scorers = _scorers(scorers_file)
    if where.server is None:
        assert app_file is not None
        done = _here(obj, app_file, cases_file, scorers)
    else:
        done = _there(obj, where, app_file, cases_file, scorers)
    _table(done, scorers)
    if json_out is not None:
        json_out.write_text(json.dumps(done.as_json(), indent=2, default=str), encoding="utf-8")
    if previous is not None:
        _compare(done, previous)
    _ended_badly(done.evaluation)
    rate = done.summary["pass_rate"] or 0.0
    if rate < min_pass_rate:
        click.echo(f"error: pass rate {rate:.2%} is below {min_pass_rate:.2%}", err=True)
        sys.exit(1)
