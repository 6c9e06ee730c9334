"""Errors of the evaluations package; every one derives from ``appforge.core.errors.AppforgeError``.

The API renders them as the one error body (``api/errors.py``)::

    EvalsError                      base (400)
    ├── DatasetNotFoundError        404 DATASET_NOT_FOUND
    ├── CaseNotFoundError           404 CASE_NOT_FOUND
    ├── EvaluationNotFoundError     404 EVALUATION_NOT_FOUND
    ├── DatasetExistsError          409 DATASET_EXISTS
    ├── EvaluationConflictError     409 EVALUATION_FINISHED (cancel of an ended evaluation),
    │                                   DATASET_EMPTY (an evaluation of a dataset without cases)
    ├── EvaluationFailedError       409 EVALUATION_FAILED (a gated promotion's evaluation missed
    │                                   its bar: nothing moved; details name the evaluation)
    ├── TooManyCasesError           413 TOO_MANY_CASES (a request's, or a dataset's, limit)
    ├── CaseInvalidError            422 CASE_INVALID, CASE_FILE_INVALID (a JSONL or CSV line)
    └── ScorerInvalidError          422 SCORER_INVALID (a pattern, schema or prompt that
                                        cannot work), OVERRIDE_INVALID
"""

from __future__ import annotations

from appforge.core.errors import AppforgeError


class EvalsError(AppforgeError):
    code = "EVALS_ERROR"
    status_code = 400


class DatasetNotFoundError(EvalsError):
    code = "DATASET_NOT_FOUND"
    status_code = 404


class CaseNotFoundError(EvalsError):
    code = "CASE_NOT_FOUND"
    status_code = 404


class EvaluationNotFoundError(EvalsError):
    code = "EVALUATION_NOT_FOUND"
    status_code = 404


class DatasetExistsError(EvalsError):
    code = "DATASET_EXISTS"
    status_code = 409


class EvaluationConflictError(EvalsError):
    code = "EVALUATION_FINISHED"
    status_code = 409


class EvaluationFailedError(EvalsError):
    code = "EVALUATION_FAILED"
    status_code = 409


class TooManyCasesError(EvalsError):
    code = "TOO_MANY_CASES"
    status_code = 413


class CaseInvalidError(EvalsError):
    code = "CASE_INVALID"
    status_code = 422


class ScorerInvalidError(EvalsError):
    code = "SCORER_INVALID"
    status_code = 422
