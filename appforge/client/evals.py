"""Datasets of cases, and evaluations of apps over them.

Each operation is written once (a generator, see ``calls``); ``EvalMethods`` is
its face on ``Client`` and ``AsyncEvalMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from appforge.client.calls import AsyncDriven, Call, Op, Sleep, SyncDriven, given, many, one
from appforge.client.eval_models import (
    CaseInfo,
    CaseResult,
    CasesAdded,
    DatasetInfo,
    EvaluationComparison,
    EvaluationInfo,
    Scorer,
)

CaseFormat = Literal["jsonl", "csv"]
_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}

# --- operations -------------------------------------------------------------------------


def _create_dataset(name: str, description: str) -> Op[DatasetInfo]:
    r = yield Call("POST", "/api/datasets", json={"name": name, "description": description})
    return one(DatasetInfo, r)


def _list_datasets() -> Op[list[DatasetInfo]]:
    r = yield Call("GET", "/api/datasets")
    return many(DatasetInfo, r)


def _get_dataset(dataset: str) -> Op[DatasetInfo]:
    r = yield Call("GET", f"/api/datasets/{dataset}")
    return one(DatasetInfo, r)


def _update_dataset(dataset: str, name: str | None, description: str | None) -> Op[DatasetInfo]:
    body = given(name=name, description=description)
    r = yield Call("PATCH", f"/api/datasets/{dataset}", json=body)
    return one(DatasetInfo, r)


def _delete_dataset(dataset: str) -> Op[None]:
    yield Call("DELETE", f"/api/datasets/{dataset}")


def _add_cases(dataset: str, cases: Sequence[Mapping[str, Any]]) -> Op[CasesAdded]:
    body = {"cases": [dict(c) for c in cases]}
    r = yield Call("POST", f"/api/datasets/{dataset}/cases", json=body)
    return one(CasesAdded, r)


def _list_cases(dataset: str, limit: int, offset: int) -> Op[list[CaseInfo]]:
    params = {"limit": limit, "offset": offset}
    r = yield Call("GET", f"/api/datasets/{dataset}/cases", params=params)
    return many(CaseInfo, r)


def _update_case(
    dataset: str,
    case: str,
    input: Mapping[str, Any] | None,
    expected: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> Op[CaseInfo]:
    body = given(input=input, expected=expected, metadata=metadata)
    r = yield Call("PATCH", f"/api/datasets/{dataset}/cases/{case}", json=body)
    return one(CaseInfo, r)


def _delete_case(dataset: str, case: str) -> Op[None]:
    yield Call("DELETE", f"/api/datasets/{dataset}/cases/{case}")


def _import_cases(
    dataset: str, data: str | bytes | Path, format: CaseFormat, replace: bool
) -> Op[CasesAdded]:
    raw = data.read_bytes() if isinstance(data, Path) else data
    content = raw.encode() if isinstance(raw, str) else raw
    params: dict[str, Any] = {"format": format}
    if replace:
        params["replace"] = "true"
    r = yield Call(
        "POST",
        f"/api/datasets/{dataset}/cases/import",
        params=params,
        content=content,
        headers={"Content-Type": _TYPES[format]},
    )
    return one(CasesAdded, r)


def _export_cases(dataset: str, format: CaseFormat) -> Op[str]:
    r = yield Call("GET", f"/api/datasets/{dataset}/cases/export", params={"format": format})
    return r.text


def _run_to_dataset(run_id: str, dataset: str, expected_from_output: bool) -> Op[CasesAdded]:
    body = {"dataset": dataset, "expected_from_output": expected_from_output}
    r = yield Call("POST", f"/api/runs/{run_id}/to-dataset", json=body)
    return one(CasesAdded, r)


def _start_evaluation(
    dataset: str,
    app: str,
    scorers: Sequence[Scorer],
    app_version: int | None,
    overrides: Mapping[str, Any] | None,
    concurrency: int | None,
) -> Op[EvaluationInfo]:
    body: dict[str, Any] = {"dataset": dataset, "app": app, "scorers": [dict(s) for s in scorers]}
    body.update(given(app_version=app_version, concurrency=concurrency))
    if overrides:
        body["overrides"] = dict(overrides)
    r = yield Call("POST", "/api/evaluations", json=body)
    return one(EvaluationInfo, r)


def _list_evaluations(
    dataset: str | None, app: str | None, status: str | None, limit: int, offset: int
) -> Op[list[EvaluationInfo]]:
    params = {**given(dataset=dataset, app=app, status=status), "limit": limit, "offset": offset}
    r = yield Call("GET", "/api/evaluations", params=params)
    return many(EvaluationInfo, r)


def _get_evaluation(evaluation: str) -> Op[EvaluationInfo]:
    r = yield Call("GET", f"/api/evaluations/{evaluation}")
    return one(EvaluationInfo, r)


def _evaluation_results(evaluation: str, limit: int, offset: int) -> Op[list[CaseResult]]:
    params = {"limit": limit, "offset": offset}
    r = yield Call("GET", f"/api/evaluations/{evaluation}/results", params=params)
    return many(CaseResult, r)


def _cancel_evaluation(evaluation: str) -> Op[EvaluationInfo]:
    r = yield Call("POST", f"/api/evaluations/{evaluation}/cancel")
    return one(EvaluationInfo, r)


def _compare_evaluations(a: str, b: str) -> Op[EvaluationComparison]:
    r = yield Call("GET", "/api/evaluations/compare", params={"a": a, "b": b})
    return one(EvaluationComparison, r)


def _wait_for_evaluation(evaluation: str, timeout: float, poll: float) -> Op[EvaluationInfo]:
    waited = 0.0
    while True:
        info = yield from _get_evaluation(evaluation)
        if info.ended:
            return info
        if waited >= timeout:
            raise TimeoutError(f"evaluation {evaluation} not ended after {timeout:g} s")
        yield Sleep(poll)
        waited += poll


# --- Client -----------------------------------------------------------------------------


class EvalMethods(SyncDriven):
    """Datasets, cases and evaluations on ``Client``."""

    def create_dataset(self, name: str, description: str = "") -> DatasetInfo:
        """An empty dataset (revision 1)."""
        return self._drive(_create_dataset(name, description))

    def list_datasets(self) -> list[DatasetInfo]:
        """The datasets, oldest first."""
        return self._drive(_list_datasets())

    def get_dataset(self, dataset: str) -> DatasetInfo:
        """A dataset by id or name."""
        return self._drive(_get_dataset(dataset))

    def update_dataset(
        self, dataset: str, *, name: str | None = None, description: str | None = None
    ) -> DatasetInfo:
        """Rename or describe a dataset."""
        return self._drive(_update_dataset(dataset, name, description))

    def delete_dataset(self, dataset: str) -> None:
        """Delete a dataset and its cases."""
        return self._drive(_delete_dataset(dataset))

    def add_cases(self, dataset: str, cases: Sequence[Mapping[str, Any]]) -> CasesAdded:
        """Append cases ``{"input", "expected"?, "metadata"?}``."""
        return self._drive(_add_cases(dataset, cases))

    def list_cases(self, dataset: str, *, limit: int = 100, offset: int = 0) -> list[CaseInfo]:
        """A dataset's cases in order."""
        return self._drive(_list_cases(dataset, limit, offset))

    def update_case(
        self,
        dataset: str,
        case: str,
        *,
        input: Mapping[str, Any] | None = None,
        expected: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CaseInfo:
        """Replace parts of a case."""
        return self._drive(_update_case(dataset, case, input, expected, metadata))

    def delete_case(self, dataset: str, case: str) -> None:
        """Delete a case."""
        return self._drive(_delete_case(dataset, case))

    def import_cases(
        self,
        dataset: str,
        data: str | bytes | Path,
        format: CaseFormat = "jsonl",
        *,
        replace: bool = False,
    ) -> CasesAdded:
        """Append the cases of a JSONL or CSV file (a path) or text; ``replace``: make them
        the dataset's only cases (one revision, none if nothing changed)."""
        return self._drive(_import_cases(dataset, data, format, replace))

    def export_cases(self, dataset: str, format: CaseFormat = "jsonl") -> str:
        """Every case as JSONL or CSV text."""
        return self._drive(_export_cases(dataset, format))

    def run_to_dataset(
        self, run_id: str, dataset: str, *, expected_from_output: bool = False
    ) -> CasesAdded:
        """Add a stored run's input (and output as expected) to a dataset as a case."""
        return self._drive(_run_to_dataset(run_id, dataset, expected_from_output))

    def start_evaluation(
        self,
        dataset: str,
        app: str,
        scorers: Sequence[Scorer],
        *,
        app_version: int | None = None,
        overrides: Mapping[str, Any] | None = None,
        concurrency: int | None = None,
    ) -> EvaluationInfo:
        """Start an evaluation (status ``queued``); see ``wait_for_evaluation``."""
        return self._drive(
            _start_evaluation(dataset, app, scorers, app_version, overrides, concurrency)
        )

    def list_evaluations(
        self,
        *,
        dataset: str | None = None,
        app: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[EvaluationInfo]:
        """Evaluations, newest first (``limit`` at most 200, ``offset``)."""
        return self._drive(_list_evaluations(dataset, app, status, limit, offset))

    def get_evaluation(self, evaluation: str) -> EvaluationInfo:
        """An evaluation's status, progress and summary."""
        return self._drive(_get_evaluation(evaluation))

    def evaluation_results(
        self, evaluation: str, *, limit: int = 1000, offset: int = 0
    ) -> list[CaseResult]:
        """Per case, in the dataset's order: run, output, scores, passed (``limit`` at
        most 1000, ``offset``)."""
        return self._drive(_evaluation_results(evaluation, limit, offset))

    def cancel_evaluation(self, evaluation: str) -> EvaluationInfo:
        """Stop an evaluation."""
        return self._drive(_cancel_evaluation(evaluation))

    def compare_evaluations(self, a: str, b: str) -> EvaluationComparison:
        """Two evaluations side by side."""
        return self._drive(_compare_evaluations(a, b))

    def wait_for_evaluation(
        self, evaluation: str, timeout: float = 600.0, poll: float = 0.5
    ) -> EvaluationInfo:
        """Poll until the evaluation has ended (done, failed or cancelled)."""
        return self._drive(_wait_for_evaluation(evaluation, timeout, poll))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncEvalMethods(AsyncDriven):
    """Datasets, cases and evaluations on ``AsyncClient``."""

    async def create_dataset(self, name: str, description: str = "") -> DatasetInfo:
        """An empty dataset (revision 1)."""
        return await self._drive(_create_dataset(name, description))

    async def list_datasets(self) -> list[DatasetInfo]:
        """The datasets, oldest first."""
        return await self._drive(_list_datasets())

    async def get_dataset(self, dataset: str) -> DatasetInfo:
        """A dataset by id or name."""
        return await self._drive(_get_dataset(dataset))

    async def update_dataset(
        self, dataset: str, *, name: str | None = None, description: str | None = None
    ) -> DatasetInfo:
        """Rename or describe a dataset."""
        return await self._drive(_update_dataset(dataset, name, description))

    async def delete_dataset(self, dataset: str) -> None:
        """Delete a dataset and its cases."""
        return await self._drive(_delete_dataset(dataset))

    async def add_cases(self, dataset: str, cases: Sequence[Mapping[str, Any]]) -> CasesAdded:
        """Append cases ``{"input", "expected"?, "metadata"?}``."""
        return await self._drive(_add_cases(dataset, cases))

    async def list_cases(
        self, dataset: str, *, limit: int = 100, offset: int = 0
    ) -> list[CaseInfo]:
        """A dataset's cases in order."""
        return await self._drive(_list_cases(dataset, limit, offset))

    async def update_case(
        self,
        dataset: str,
        case: str,
        *,
        input: Mapping[str, Any] | None = None,
        expected: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CaseInfo:
        """Replace parts of a case."""
        return await self._drive(_update_case(dataset, case, input, expected, metadata))

    async def delete_case(self, dataset: str, case: str) -> None:
        """Delete a case."""
        return await self._drive(_delete_case(dataset, case))

    async def import_cases(
        self,
        dataset: str,
        data: str | bytes | Path,
        format: CaseFormat = "jsonl",
        *,
        replace: bool = False,
    ) -> CasesAdded:
        """Append the cases of a JSONL or CSV file (a path) or text; ``replace``: make them
        the dataset's only cases (one revision, none if nothing changed)."""
        return await self._drive(_import_cases(dataset, data, format, replace))

    async def export_cases(self, dataset: str, format: CaseFormat = "jsonl") -> str:
        """Every case as JSONL or CSV text."""
        return await self._drive(_export_cases(dataset, format))

    async def run_to_dataset(
        self, run_id: str, dataset: str, *, expected_from_output: bool = False
    ) -> CasesAdded:
        """Add a stored run's input (and output as expected) to a dataset as a case."""
        return await self._drive(_run_to_dataset(run_id, dataset, expected_from_output))

    async def start_evaluation(
        self,
        dataset: str,
        app: str,
        scorers: Sequence[Scorer],
        *,
        app_version: int | None = None,
        overrides: Mapping[str, Any] | None = None,
        concurrency: int | None = None,
    ) -> EvaluationInfo:
        """Start an evaluation (status ``queued``); see ``wait_for_evaluation``."""
        return await self._drive(
            _start_evaluation(dataset, app, scorers, app_version, overrides, concurrency)
        )

    async def list_evaluations(
        self,
        *,
        dataset: str | None = None,
        app: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[EvaluationInfo]:
        """Evaluations, newest first (``limit`` at most 200, ``offset``)."""
        return await self._drive(_list_evaluations(dataset, app, status, limit, offset))

    async def get_evaluation(self, evaluation: str) -> EvaluationInfo:
        """An evaluation's status, progress and summary."""
        return await self._drive(_get_evaluation(evaluation))

    async def evaluation_results(
        self, evaluation: str, *, limit: int = 1000, offset: int = 0
    ) -> list[CaseResult]:
        """Per case, in the dataset's order: run, output, scores, passed (``limit`` at
        most 1000, ``offset``)."""
        return await self._drive(_evaluation_results(evaluation, limit, offset))

    async def cancel_evaluation(self, evaluation: str) -> EvaluationInfo:
        """Stop an evaluation."""
        return await self._drive(_cancel_evaluation(evaluation))

    async def compare_evaluations(self, a: str, b: str) -> EvaluationComparison:
        """Two evaluations side by side."""
        return await self._drive(_compare_evaluations(a, b))

    async def wait_for_evaluation(
        self, evaluation: str, timeout: float = 600.0, poll: float = 0.5
    ) -> EvaluationInfo:
        """Poll until the evaluation has ended (done, failed or cancelled)."""
        return await self._drive(_wait_for_evaluation(evaluation, timeout, poll))
