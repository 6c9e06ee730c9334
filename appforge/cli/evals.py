"""``appforge eval``: evaluate an app file over a case file here, for CI.

Prints a table (one row per case, one column per scorer) and the summary, and
exits 1 when the pass rate is below ``--min-pass-rate``. ``--json`` writes the
whole result; ``--compare`` reads an earlier one and lists the cases that
regressed (passed then, fail now) and improved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from appforge.cli.root import load_settings, main

if TYPE_CHECKING:
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


def _table(done: LocalEvaluation, scorers: list[ScorerSpec]) -> None:
    names = [s.key for s in scorers]
    click.echo("\t".join(["case", "passed", *names]))
    for case in done.cases:
        by_name = {s["scorer"]: s for s in case.scores or []}
        cells = [f"{by_name[n]['score']:.2f}{'' if by_name[n]['passed'] else '!'}" for n in names]
        click.echo("\t".join([case.case_id, "yes" if case.passed else "no", *cells]))
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


@main.command(name="eval")
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("cases_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
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
@click.pass_obj
def evaluate(
    obj: dict[str, Any],
    app_file: Path,
    cases_file: Path,
    scorers_file: Path,
    min_pass_rate: float,
    json_out: Path | None,
    previous: Path | None,
) -> None:
    """Evaluate an app file (YAML) over a case file (JSONL or .csv) here, storing nothing;
    exit 1 when the pass rate is below --min-pass-rate."""
    from apps_yaml.loader import load_file
    from evals.local import evaluate as run_cases
    from evals.scorers import check_scorers
    from runs.service import RunService
    from runs.services import Services

    settings = load_settings()
    doc = load_file(app_file)
    cases = _cases(cases_file, settings.evals.max_cases_per_dataset)
    scorers = _scorers(scorers_file)
    check_scorers(scorers, settings.evals)
    services = Services.open(settings, providers=obj.get("providers"), embedder=obj.get("embedder"))
    try:
        done = run_cases(RunService(services), doc, cases, scorers)
    finally:
        services.close()
    _table(done, scorers)
    if json_out is not None:
        json_out.write_text(json.dumps(done.as_json(), indent=2, default=str), encoding="utf-8")
    if previous is not None:
        _compare(done, previous)
    rate = done.summary["pass_rate"] or 0.0
    if rate < min_pass_rate:
        click.echo(f"error: pass rate {rate:.2%} is below {min_pass_rate:.2%}", err=True)
        sys.exit(1)
