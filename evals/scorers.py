"""Scorers: what a case's run is judged by. Each gives a score in [0, 1], passed or not,
and a reason.

A scorer is ``{"type", "name"?, "output"?, "value"?, "threshold"?}``: ``output`` is
the app's output key scored (default: its first), ``value`` the reference
(default: the case's ``expected[output]``).

- ``equals``: the output is the reference (strings compared without surrounding
  white space);
- ``contains``: the reference text is in the output (a list: every item is);
- ``regex``: the pattern (``value``, RE2 syntax: linear time) matches somewhere in
  the output;
- ``json_schema``: the output (JSON text, or a value) is valid against the schema;
- ``number_close``: the output is a number within ``threshold`` (default 0) of the
  reference;
- ``similarity``: cosine similarity of the MiniLM embeddings of output and
  reference (the datasources' embedder), passed at ``threshold`` (default 0.7);
- ``cites``: the reference source (or every one of a list) is among the run's
  sources (the output key ``output``, default ``sources``); the score is the share
  found;
- ``latency_ms``, ``tokens``: budgets; passed when the run's latency (its total
  tokens) is at most ``threshold``;
- ``judge`` (``{"type": "judge", "prompt", "label"?, "model"?}``): a managed prompt,
  rendered with ``input``, ``output`` and ``expected``, run by a model that answers
  with a score (``evals.judge``).

A case whose run did not succeed fails every scorer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import re2
from pydantic import BaseModel, ConfigDict, Field

from appforge.core.scorer_types import ScorerType
from appforge.core.settings import EvalSettings
from evals.errors import ScorerInvalidError

_BUDGETS: tuple[ScorerType, ...] = ("latency_ms", "tokens")
_SIMILARITY = 0.7
_SHOWN = 120  # characters of a value quoted in a reason


class ScorerSpec(BaseModel):
    """One scorer of an evaluation."""

    model_config = ConfigDict(extra="forbid")

    type: ScorerType
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="How results name it (default: its type); unique in an evaluation.",
    )
    output: str | None = Field(
        default=None, min_length=1, max_length=100, description="The output key scored."
    )
    value: Any = Field(default=None, description="The reference; default: expected[output].")
    threshold: float | None = Field(
        default=None,
        description="similarity, judge: the passing score; number_close: the "
        "tolerance; latency_ms and tokens: the maximum.",
    )
    prompt: str | None = Field(
        default=None, min_length=1, max_length=200, description="judge: the managed prompt."
    )
    label: str | None = Field(
        default=None, pattern=r"^[a-z0-9_.-]{1,36}$", description="judge: its label."
    )
    model: str | None = Field(
        default=None, min_length=1, max_length=200, description="judge: the model (alias)."
    )

    @property
    def key(self) -> str:
        return self.name or self.type


@dataclass(frozen=True)
class CaseRun:
    """What a scorer sees of a case and its run."""

    input: dict[str, Any]
    expected: dict[str, Any]
    output: dict[str, Any]
    output_keys: Sequence[str]  # the app's output keys, in its order
    status: str  # the run's: succeeded, failed, timeout, ...
    error: dict[str, Any] | None = None
    latency_ms: float | None = None
    tokens: int = 0


@dataclass(frozen=True)
class Score:
    scorer: str
    score: float
    passed: bool
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "scorer": self.scorer,
            "score": round(self.score, 6),
            "passed": self.passed,
            "reason": self.reason,
            **self.extra,
        }


Embed = Callable[[list[str]], Any]  # texts -> normalised vectors (rows)
JudgeFn = Callable[["ScorerSpec", "CaseRun"], "Score"]  # the judge scorer (evals.judge)


# --- checking scorers when an evaluation is asked for -----------------------------------


def _compile(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _check_one(spec: ScorerSpec, limits: EvalSettings) -> None:
    def bad(message: str) -> ScorerInvalidError:
        return ScorerInvalidError(f"scorer '{spec.key}': {message}", details={"scorer": spec.key})

    if spec.type == "regex":
        if not isinstance(spec.value, str) or not spec.value:
            raise bad("a regex scorer needs its pattern as value")
        if len(spec.value.encode()) > limits.max_pattern_bytes:
            raise bad(f"the pattern is over {limits.max_pattern_bytes} bytes")
        try:
            _compile(spec.value)
        except re2.error as exc:
            raise bad(f"the pattern does not compile: {exc}") from None
    elif spec.type == "json_schema" and spec.value is not None:
        if len(json.dumps(spec.value, default=str)) > limits.max_schema_bytes:
            raise bad(f"the schema is over {limits.max_schema_bytes} bytes")
        if not isinstance(spec.value, dict | bool):
            raise bad("the schema must be a JSON object")
        try:
            jsonschema.Draft202012Validator.check_schema(spec.value)
        except jsonschema.SchemaError as exc:
            raise bad(f"not a JSON Schema: {exc.message}") from None
    elif spec.type == "judge":
        if spec.prompt is None:
            raise bad("a judge needs its managed prompt (prompt)")
        if spec.threshold is not None and not 0 <= spec.threshold <= 1:
            raise bad("the judge's threshold is between 0 and 1")
    elif spec.type in _BUDGETS:
        if spec.threshold is None or spec.threshold < 0:
            raise bad("a budget needs a threshold (the maximum) of 0 or more")
    elif spec.type == "similarity" and spec.threshold is not None:
        if not 0 <= spec.threshold <= 1:
            raise bad("the similarity threshold is between 0 and 1")
    elif spec.type == "number_close" and spec.threshold is not None and spec.threshold < 0:
        raise bad("the tolerance is 0 or more")


def check_scorers(specs: Sequence[ScorerSpec], limits: EvalSettings) -> None:
    """Refuse scorers that cannot work (``SCORER_INVALID``), before anything runs."""
    if not specs:
        raise ScorerInvalidError("give at least one scorer")
    if len(specs) > limits.max_scorers:
        raise ScorerInvalidError(
            f"{len(specs)} scorers, over {limits.max_scorers} (APPFORGE_EVALS__MAX_SCORERS)"
        )
    seen: set[str] = set()
    for spec in specs:
        if spec.key in seen:
            raise ScorerInvalidError(
                f"two scorers are named '{spec.key}': give each a distinct name",
                details={"scorer": spec.key},
            )
        seen.add(spec.key)
        _check_one(spec, limits)


# --- scoring ---------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _verdict(spec: ScorerSpec, passed: bool, reason: str, score: float | None = None) -> Score:
    value = (1.0 if passed else 0.0) if score is None else min(1.0, max(0.0, score))
    return Score(spec.key, value, passed, reason)


def _equals(spec: ScorerSpec, got: Any, want: Any) -> Score:
    if isinstance(got, str) and isinstance(want, str):
        same = got.strip() == want.strip()
    else:
        same = got == want
    reason = "equal" if same else f"expected {_shown(want)}, got {_shown(got)}"
    return _verdict(spec, same, reason)


def _contains(spec: ScorerSpec, got: Any, want: Any) -> Score:
    wanted = [_text(w) for w in want] if isinstance(want, list) else [_text(want)]
    text = _text(got)
    missing = [w for w in wanted if w not in text]
    if not missing:
        return _verdict(spec, True, "contains " + ", ".join(_shown(w) for w in wanted))
    found = (len(wanted) - len(missing)) / len(wanted)
    return _verdict(spec, False, f"{_shown(missing[0])} is not in the output", found)


def _regex(spec: ScorerSpec, got: Any) -> Score:
    match = _compile(str(spec.value)).search(_text(got))
    if match is None:
        return _verdict(spec, False, f"no match of {_shown(spec.value)}")
    return _verdict(spec, True, f"matches {_shown(match.group(0))}")


def _json_schema(spec: ScorerSpec, got: Any, schema: Any) -> Score:
    if not isinstance(schema, dict | bool):
        return _verdict(spec, False, "the reference is not a JSON Schema")
    if isinstance(got, str):
        try:
            got = json.loads(got)
        except json.JSONDecodeError as exc:
            return _verdict(spec, False, f"the output is not JSON ({exc.msg})")
    try:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(got)
        )
    except jsonschema.SchemaError as exc:
        return _verdict(spec, False, f"the reference is not a JSON Schema: {exc.message}")
    if error is None:
        return _verdict(spec, True, "valid")
    where = "/".join(str(p) for p in error.absolute_path)
    return _verdict(spec, False, f"invalid at '/{where}': {_shown(error.message)}")


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    found = _NUMBER.search(str(value))
    return float(found.group(0)) if found else None


def _number_close(spec: ScorerSpec, got: Any, want: Any) -> Score:
    have, target = _number(got), _number(want)
    if target is None:
        return _verdict(spec, False, f"the reference {_shown(want)} is not a number")
    if have is None or not math.isfinite(have):
        return _verdict(spec, False, f"no number in the output {_shown(got)}")
    tolerance = spec.threshold or 0.0
    close = abs(have - target) <= tolerance
    return _verdict(spec, close, f"{have:g} vs {target:g} (tolerance {tolerance:g})")


def _similarity(spec: ScorerSpec, got: Any, want: Any, embed: Embed) -> Score:
    vectors = embed([_text(got), _text(want)])
    cosine = float(sum(float(a) * float(b) for a, b in zip(vectors[0], vectors[1], strict=True)))
    threshold = _SIMILARITY if spec.threshold is None else spec.threshold
    passed = cosine >= threshold
    return _verdict(spec, passed, f"cosine similarity {cosine:.3f} (pass at {threshold:g})", cosine)


def _cites(spec: ScorerSpec, got: Any, want: Any) -> Score:
    sources = [_text(s) for s in got] if isinstance(got, list) else []
    wanted = [_text(w) for w in want] if isinstance(want, list) else [_text(want)]
    if not wanted:
        return _verdict(spec, True, "no source expected")
    missing = [w for w in wanted if w not in sources]
    share = (len(wanted) - len(missing)) / len(wanted)
    if missing:
        return _verdict(spec, False, f"{_shown(missing[0])} is not among the sources", share)
    return _verdict(spec, True, "cites " + ", ".join(_shown(w) for w in wanted))


def _budget(spec: ScorerSpec, run: CaseRun) -> Score:
    limit = spec.threshold if spec.threshold is not None else math.inf
    used = run.latency_ms if spec.type == "latency_ms" else float(run.tokens)
    if used is None:
        return _verdict(spec, False, "the run has no latency")
    unit = " ms" if spec.type == "latency_ms" else " tokens"
    return _verdict(spec, used <= limit, f"{used:.0f}{unit} (at most {limit:g})")


def _output_key(spec: ScorerSpec, run: CaseRun) -> str | None:
    if spec.output is not None:
        return spec.output
    if spec.type == "cites":
        return "sources"
    return run.output_keys[0] if run.output_keys else next(iter(run.output), None)


def score_case(spec: ScorerSpec, run: CaseRun, embed: Embed, judge: JudgeFn | None = None) -> Score:
    """Score one case's run with one scorer."""
    if run.status != "succeeded":
        code = (run.error or {}).get("code", run.status.upper())
        return _verdict(spec, False, f"the run did not succeed ({code})")
    if spec.type in _BUDGETS:
        return _budget(spec, run)
    if spec.type == "judge":
        if judge is None:
            return _verdict(spec, False, "no judge here")
        return judge(spec, run)
    key = _output_key(spec, run)
    if key is None or key not in run.output:
        return _verdict(spec, False, f"the run has no output '{key}'")
    got = run.output[key]
    want = spec.value if spec.value is not None else run.expected.get(key)
    if want is None:
        return _verdict(spec, False, f"no reference: no value, and no expected['{key}']")
    return _COMPARE[spec.type](spec, got, want, embed)


# How each type that compares an output with its reference scores it. With the types
# scored from the run itself, exactly the kernel's ScorerType (a test holds it): a type
# added there but not here fails that test, instead of being scored by another rule.
_COMPARE: dict[ScorerType, Callable[[ScorerSpec, Any, Any, Embed], Score]] = {
    "equals": lambda spec, got, want, _: _equals(spec, got, want),
    "contains": lambda spec, got, want, _: _contains(spec, got, want),
    "regex": lambda spec, got, _want, _: _regex(spec, got),
    "json_schema": lambda spec, got, want, _: _json_schema(spec, got, want),
    "number_close": lambda spec, got, want, _: _number_close(spec, got, want),
    "similarity": _similarity,
    "cites": lambda spec, got, want, _: _cites(spec, got, want),
}
_FROM_RUN: frozenset[ScorerType] = frozenset({*_BUDGETS, "judge"})
# Every scorer type this module scores.
SCORED: frozenset[ScorerType] = frozenset(_COMPARE) | _FROM_RUN
