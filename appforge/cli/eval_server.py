"""``appforge eval --server URL``: the same evaluation, stored and run by a server.

The app file is saved on the server (created, or updated by its name: a new
version only if it changed) and the evaluation runs that version; ``--app``
names an app already there instead. The case file becomes a named dataset
(``--dataset``, default the file's name without its suffix), created if need be
and replaced by the file's cases in one change, so its revision rises only when
the cases changed. The evaluation is then followed to its end with a progress
bar on stderr; Ctrl-C cancels it. Its results come back in the shape of a local
run (``case-<n>`` in the file's order), so the table, ``--json`` and
``--compare`` are the same either way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from appforge.client import CaseResult, Client, EvaluationInfo, Scorer
    from appforge.client.evals import CaseFormat
    from evals.local import LocalEvaluation

POLL_SECONDS = 0.5
_PAGE = 1000  # results per request (the API's most)


@dataclass(frozen=True)
class Remote:
    """Where and how to run: the app (a file to save, or the name or uuid of one there)."""

    client: Client
    app_file: Path | None
    app: str | None
    dataset: str
    concurrency: int | None


def _app(remote: Remote) -> tuple[str, int | None]:
    """The app's uuid (or the given name) and the version to run."""
    from appforge.cli.run import save_app
    from apps_yaml.loader import load_file

    if remote.app_file is None:
        assert remote.app is not None
        return remote.app, None
    # Checked here first (bad YAML with its line); the server judges the rest.
    name = load_file(remote.app_file).name
    saved = save_app(remote.client, name, remote.app_file.read_text(encoding="utf-8"))
    click.echo(f"app {saved.name} ({saved.uuid}) version {saved.version}", err=True)
    return saved.uuid, saved.version


def _dataset(client: Client, name: str, cases_file: Path) -> int:
    """Make the dataset ``name`` hold the file's cases; its revision."""
    from appforge.client import ConflictError, NotFoundError

    try:
        before = client.get_dataset(name).revision
    except NotFoundError:
        try:
            before = client.create_dataset(name, f"appforge eval {cases_file.name}").revision
        except ConflictError:  # made meanwhile by another run of this command
            before = client.get_dataset(name).revision
    kind: CaseFormat = "csv" if cases_file.suffix.lower() == ".csv" else "jsonl"
    now = client.import_cases(name, cases_file, kind, replace=True).revision
    change = "unchanged" if now == before else "new revision"
    click.echo(f"dataset {name} revision {now} ({change})", err=True)
    return now


def _follow(client: Client, info: EvaluationInfo) -> EvaluationInfo:
    """Poll the evaluation until it ends, with a progress bar on stderr."""
    label = f"evaluation {info.id}"
    with click.progressbar(length=info.cases_total, label=label, file=sys.stderr) as bar:
        shown = 0
        while not info.ended:
            time.sleep(POLL_SECONDS)
            info = client.get_evaluation(info.id)
            bar.update(info.cases_done - shown)
            shown = info.cases_done
    return info


def _cancel(client: Client, info: EvaluationInfo) -> None:
    """Ctrl-C: cancel the evaluation (unless it ended meanwhile) and end with 130."""
    from appforge.client import ConflictError

    try:
        info = client.cancel_evaluation(info.id)
    except ConflictError:
        info = client.get_evaluation(info.id)
    click.echo(
        f"\nevaluation {info.id} {info.status} ({info.cases_done}/{info.cases_total} cases done)",
        err=True,
    )
    sys.exit(130)


def _results(client: Client, evaluation_id: str) -> list[CaseResult]:
    found: list[CaseResult] = []
    while True:
        page = client.evaluation_results(evaluation_id, limit=_PAGE, offset=len(found))
        found.extend(page)
        if len(page) < _PAGE:
            return found


def _as_local(info: EvaluationInfo, results: Sequence[CaseResult]) -> LocalEvaluation:
    from evals.local import LocalCase, LocalEvaluation

    cases = [
        LocalCase(
            case_id=f"case-{n}",
            status=r.status,
            input=r.input,
            expected=r.expected,
            output=r.output,
            scores=r.scores,
            passed=r.passed,
            latency_ms=r.latency_ms,
            tokens=r.tokens,
            error=r.error,
            run_id=r.run_id,
        )
        for n, r in enumerate(results, start=1)
    ]
    about = {
        "id": info.id,
        "status": info.status,
        "app_uuid": info.app_uuid,
        "app_version": info.app_version,
        "dataset": info.dataset_name,
        "dataset_revision": info.dataset_revision,
        "error": info.error,
    }
    return LocalEvaluation(cases, about)


def evaluate(remote: Remote, cases_file: Path, scorers: Sequence[Scorer]) -> LocalEvaluation:
    """Save the app and the dataset, run the evaluation on the server, follow it to its
    end (Ctrl-C cancels it) and read its results."""
    app, version = _app(remote)
    _dataset(remote.client, remote.dataset, cases_file)
    info = remote.client.start_evaluation(
        remote.dataset,
        app,
        scorers,
        app_version=version,
        concurrency=remote.concurrency,
    )
    try:
        info = _follow(remote.client, info)
    except KeyboardInterrupt:
        _cancel(remote.client, info)
    return _as_local(info, _results(remote.client, info.id))
