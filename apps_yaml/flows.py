"""Apps written as Python flows: steps are functions, chained by what they return.

    flow = Flow("summarize-many")

    @flow.step("split", initial=True, one_to_many=True)
    def split(ctx: StepContext, text: str) -> StepResult:
        return StepResult(next_step="summarize", part=text.split("\\n\\n"))

    @flow.step("summarize", prompt="summarizer", label="production")
    def summarize(ctx: StepContext, part: str) -> StepResult:
        return StepResult(next_step="join", summary=ctx.llm(variables={"text": part}))

    @flow.step("join", many_to_one=True)
    def join(ctx: StepContext, summary: list[str]) -> StepResult:
        text = ctx.llm("Combine: " + " ".join(summary), stream="summary")
        return StepResult(summary=text)

A step receives the run's input (the initial step) or the named outputs of the
step before it, and returns a :class:`StepResult`: its named outputs, the
``next_step`` (a name, a list of names, or None to end) and an optional
``error``. A ``one_to_many`` step returns one list output; the next step runs
once per item (fan-out). A ``many_to_one`` step runs once, after every branch
reached it, with each output as the list of the branches' values (fan-in).
The outputs of the step that ends the flow are the run's output.

The flow's inputs are declared like a YAML app's ``input:`` map
(``Flow("x", input={"text": {"type": "string", "required": True}})``, or
``InputField`` values); without ``input=`` they are read from the initial
step's parameters (``text: str`` is a required string input). Runs check their
input against them, as for YAML apps.

Sessions: with ``Flow(..., history=N)`` every step sees the session's last N
turns (oldest first) as ``ctx.history``, each with the ``input`` and
``output`` of that earlier run; a run that succeeds becomes the next turn.
Such a flow is a ``type: chat`` app; with ``history=0`` (the default)
``ctx.history`` is empty. ``ctx.session_id`` is the run's session.

Running a flow file is a local, trusted action: ``appforge run flow.py`` runs
it here, and ``appforge run flow.py --serve`` (or ``--session ID``) serves it
through the run API of an API started in that same process. The API never
accepts Python code: the stored app only names the flow (``flow: <name>``,
see ``app_document``), and only the process that loaded the file serves it.
``run`` yields the same events as the YAML engine, so the CLI and the API
store and stream flows like any app: every step run is a stored run step
(``<step>#<n>``, with its input, output, status, timing, usage, model calls
and the managed prompt version used).

Streaming: ``ctx.llm(..., stream="summary")`` sends the model's text as
``Chunk`` events of the output key ``summary`` while it is generated (each
step runs in a worker thread whose chunks the ``run`` generator yields as they
come); every other output arrives whole, at the end, as an ``Output`` event.
Only the step that ends the flow can stream, so that the chunks are the run's
output byte for byte:

- ``llm(stream=...)`` in a step that runs in a fan-out branch (after a
  ``one_to_many`` step or a ``next_step`` list, until a ``many_to_one`` step
  joins them), or while other steps are still to run, raises ``FLOW_INVALID``
  before any chunk is sent; stream from the joining step instead.
- A step that streamed must end the flow (``next_step=None``) and return the
  streamed text under that key, or leave the key out (the streamed text is
  then its value); going on to another step, or returning another value for
  the key, fails the run with ``FLOW_INVALID``. The client has seen the chunks
  by then, so they are the failed run's stored (partial) output.
- Cancellation (the ``cancel`` event, the run timeout, a client that goes
  away, or this generator being closed) stops the model at its next token;
  the run ends ``CANCELLED`` with the text streamed so far. The step's thread
  is always joined before ``run`` moves on or returns.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
import typing
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from appforge.core.errors import AppforgeError
from apps_yaml.events import (
    Event,
    Failed,
    FlowStepResult,
    Output,
    StepFinished,
    StepStarted,
)
from apps_yaml.flow_context import StepContext, call_in_thread
from apps_yaml.runner import Dependencies, HistoryTurn
from apps_yaml.schema import IDENT, InputField

__all__ = ["Flow", "FlowStep", "StepContext", "StepResult"]

# Input types read from the initial step's annotations (anything else is a string).
_INPUT_TYPES: dict[Any, Literal["string", "integer", "number", "boolean", "array", "object"]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}
# A stored run step is "<name>#<n>" and step ids are stored in 64 characters.
_MAX_STEP_NAME = 48


class StepResult:
    """What a step returns: named outputs, the next step(s), or an error."""

    def __init__(
        self, next_step: str | list[str] | None = None, error: str | None = None, **outputs: Any
    ) -> None:
        self.next_step = next_step
        self.error = error
        self.outputs = outputs


@dataclass
class FlowStep:
    name: str
    func: Callable[..., StepResult]
    prompt: str | None = None
    label: str = "production"
    initial: bool = False
    one_to_many: bool = False
    many_to_one: bool = False


class Flow:
    """A flow of Python steps; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        model: str = "default",
        description: str = "",
        input: Mapping[str, InputField | Mapping[str, Any]] | None = None,
        history: int = 0,
    ) -> None:
        if not name or len(name) > 200:
            raise ValueError("a flow name is 1-200 characters")
        if history < 0:
            raise ValueError("history is a number of turns, 0 or more")
        self.name = name
        self.model = model
        self.description = description
        self.history = history
        self.steps: dict[str, FlowStep] = {}
        self._input: dict[str, InputField] | None = None
        if input is not None:
            self._input = {}
            for key, spec in input.items():
                if not re.match(IDENT, key):
                    raise ValueError(f"flow '{name}': input name {key!r} is not an identifier")
                self._input[key] = (
                    spec if isinstance(spec, InputField) else InputField.model_validate(spec)
                )

    @property
    def input(self) -> dict[str, InputField]:
        """The declared inputs, or those read from the initial step's parameters."""
        if self._input is not None:
            return dict(self._input)
        func = self.initial.func
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable annotations: the inputs are untyped strings
            hints = {}
        fields: dict[str, InputField] = {}
        for param in list(inspect.signature(func).parameters.values())[1:]:
            if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                continue
            hint = hints.get(param.name)
            kind = _INPUT_TYPES.get(typing.get_origin(hint) or hint, "string")
            if param.default is param.empty:
                fields[param.name] = InputField(type=kind, required=True)
            else:
                fields[param.name] = InputField(type=kind, default=param.default)
        return fields

    def app_document(self) -> dict[str, Any]:
        """The app document that names this flow: what ``--serve`` saves through the API."""
        return {
            "version": 1,
            "name": self.name,
            "description": self.description,
            "type": "chat" if self.history else "text",
            "flow": self.name,
            "input": {
                key: {"type": spec.type, **spec.model_dump(mode="json", exclude_defaults=True)}
                for key, spec in self.input.items()
            },
        }

    def step(
        self,
        name: str,
        *,
        prompt: str | None = None,
        label: str = "production",
        initial: bool = False,
        one_to_many: bool = False,
        many_to_one: bool = False,
    ) -> Callable[[Callable[..., StepResult]], Callable[..., StepResult]]:
        """Register a step; ``prompt`` names a managed prompt resolved at ``label``."""

        def register(func: Callable[..., StepResult]) -> Callable[..., StepResult]:
            if not name or len(name) > _MAX_STEP_NAME:
                raise ValueError(f"a step name is 1-{_MAX_STEP_NAME} characters")
            if name in self.steps:
                raise ValueError(f"flow '{self.name}' already has a step '{name}'")
            if initial and any(s.initial for s in self.steps.values()):
                raise ValueError(f"flow '{self.name}' already has an initial step")
            self.steps[name] = FlowStep(
                name, func, prompt, label, initial, one_to_many, many_to_one
            )
            return func

        return register

    @property
    def initial(self) -> FlowStep:
        for s in self.steps.values():
            if s.initial:
                return s
        raise ValueError(f"flow '{self.name}' has no initial step")

    def run(
        self,
        inputs: Mapping[str, Any],
        deps: Dependencies,
        *,
        session_id: str | None = None,
        history: Sequence[HistoryTurn] = (),
        cancel: threading.Event | None = None,
    ) -> Generator[Event, None, None]:
        """Run from the initial step; yield the engine's events.

        ``history`` (earlier turns of the session, oldest first) reaches the
        steps as ``ctx.history``, cut to the flow's ``history`` turns. Setting
        ``cancel`` stops the run (the model at its next token); closing this
        generator early sets it too.
        """
        turns = list(history)[-self.history :] if self.history else []
        if cancel is None:  # the steps' model calls and threads stop on this event
            cancel = threading.Event()
        walk = _Walk(self, dict(inputs))
        runs = 0
        while (queued := walk.next()) is not None:
            step, kwargs, branch = queued
            if cancel.is_set():
                yield Failed("CANCELLED", "the run was cancelled", step.name, 499)
                return
            runs += 1
            ctx = StepContext(
                step=step.name,
                deps=deps,
                model=self.model,
                cancel=cancel,
                session_id=session_id,
                history=turns,
                stream_refused=_stream_refusal(branch, walk.others_pending, bool(walk.final)),
            )
            result = yield from self._run_step(step, f"{step.name}#{runs}", kwargs, ctx)
            if result is None:
                return
            walk.streamed.update(ctx.streamed)
            problem = walk.route(step, result, branch)
            if problem is not None:
                yield Failed("FLOW_INVALID", problem, step.name)
                return
        yield from walk.outputs()

    def _run_step(
        self, step: FlowStep, label: str, kwargs: dict[str, Any], ctx: StepContext
    ) -> Generator[Event, None, StepResult | None]:
        yield StepStarted(label, "flow")
        started = time.perf_counter()
        # Our own components (providers, prompts) keep their error codes; any other
        # exception is the flow's code failing: a failed run, not a crash.
        failure: Failed | None = None
        try:
            result = yield from _call_step(step, kwargs, ctx)
        except AppforgeError as exc:
            result = StepResult(error=exc.message)
            failure = Failed(exc.code, exc.message, step.name, exc.status_code)
        except Exception as exc:
            result = StepResult(error=f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        cancelled = ctx.cancel is not None and ctx.cancel.is_set()
        if ctx.streamed and not result.error and not cancelled:
            problem = _streamed_problem(step, result, ctx.streamed)
            if problem is not None:
                failure = Failed("FLOW_INVALID", problem, step.name)
            # A streamed key left out of the result has the streamed text as its value.
            result = StepResult(result.next_step, problem, **{**ctx.streamed, **result.outputs})
        record = FlowStepResult(
            input=_jsonable(kwargs),
            output=_jsonable(result.outputs),
            status="failed" if result.error else "cancelled" if cancelled else "succeeded",
            calls=ctx.calls,
            error=result.error,
            prompt=ctx.prompt_source,
        )
        yield StepFinished(label, "flow", latency, record)
        if result.error:
            yield failure or Failed("FLOW_STEP_FAILED", result.error, step.name, 500)
            return None
        if cancelled:  # the model call stopped early: its output is not the step's
            yield Failed("CANCELLED", "the run was cancelled", step.name, 499)
            return None
        return result


class _Walk:
    """Where a flow run is: the steps queued, the fan-ins waiting, the final outputs."""

    def __init__(self, flow: Flow, inputs: dict[str, Any]) -> None:
        self.flow = flow
        # Each queued step: its inputs, and whether it runs in a fan-out branch.
        self.pending: list[tuple[FlowStep, dict[str, Any], bool]] = [(flow.initial, inputs, False)]
        self.waiting: dict[str, list[dict[str, Any]]] = {}
        self.final: dict[str, Any] = {}
        self.streamed: set[str] = set()

    @property
    def others_pending(self) -> bool:
        return bool(self.pending or self.waiting)

    def next(self) -> tuple[FlowStep, dict[str, Any], bool] | None:
        """The next step to run, or None when the flow is done."""
        if not self.pending and self.waiting:  # every branch arrived: each fan-in, on lists
            name, arrived = next(iter(self.waiting.items()))
            del self.waiting[name]
            keys = list(dict.fromkeys(k for outputs in arrived for k in outputs))
            joined = {k: [o.get(k) for o in arrived] for k in keys}
            self.pending.append((self.flow.steps[name], joined, False))
        return self.pending.pop(0) if self.pending else None

    def route(self, step: FlowStep, result: StepResult, branch: bool) -> str | None:
        """Queue what follows ``step``; why the flow is invalid, or None."""
        nexts = result.next_step
        if nexts is None:
            self.final.update(result.outputs)
            return None
        targets = [nexts] if isinstance(nexts, str) else list(nexts)
        forks = branch or step.one_to_many or len(targets) > 1
        for target in targets:
            if target not in self.flow.steps:
                return f"step '{step.name}' names no step '{target}'"
            try:
                branches = _fan_out(step, result.outputs)
            except ValueError as exc:
                return str(exc)
            for outputs in branches:
                if self.flow.steps[target].many_to_one:
                    self.waiting.setdefault(target, []).append(outputs)
                else:
                    self.pending.append((self.flow.steps[target], outputs, forks))
        return None

    def outputs(self) -> Iterator[Event]:
        """The final outputs not streamed already, or a failure if one is not JSON data."""
        for key, value in self.final.items():
            if key in self.streamed:  # sent as chunks, checked equal to them
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                yield Failed(
                    "FLOW_INVALID", f"output '{key}' is a {type(value).__name__}, not JSON data"
                )
                return
        for key, value in self.final.items():
            if key not in self.streamed:
                yield Output(key, value)


def _fan_out(step: FlowStep, outputs: dict[str, Any]) -> list[dict[str, Any]]:
    if not step.one_to_many:
        return [outputs]
    lists = [k for k, v in outputs.items() if isinstance(v, list)]
    if len(lists) != 1:
        raise ValueError(f"one_to_many step '{step.name}' must return exactly one list output")
    key = lists[0]
    return [{**outputs, key: item} for item in outputs[key]]


def _call_step(
    step: FlowStep, kwargs: dict[str, Any], ctx: StepContext
) -> Generator[Event, None, StepResult]:
    """The step, with its managed prompt resolved; its result checked to be a StepResult."""
    if step.prompt is not None:
        if ctx.deps.prompts is None:
            raise RuntimeError("managed prompts are not available here")
        resolved = ctx.deps.prompts.resolve(step.prompt, step.label, None)
        ctx.prompt, ctx.prompt_source = resolved.prompt, resolved.source
    result = yield from call_in_thread(step.func, step.name, kwargs, ctx)
    if not isinstance(result, StepResult):
        raise TypeError(f"step '{step.name}' returned {type(result).__name__}, not a StepResult")
    return result


def _stream_refusal(branch: bool, others_pending: bool, ended: bool) -> str | None:
    """Why a step may not stream into the run's output (None: it may)."""
    if branch:
        return (
            "it runs in a fan-out branch (after a one_to_many step or a next_step list);"
            " stream from the many_to_one step that joins the branches"
        )
    if others_pending:
        return "other steps of the flow are still to run"
    if ended:
        return "another branch already ended the flow"
    return None


def _streamed_problem(step: FlowStep, result: StepResult, streamed: dict[str, str]) -> str | None:
    """Why a step's result contradicts the chunks it streamed (None: it does not)."""
    keys = ", ".join(f"'{k}'" for k in streamed)
    if result.next_step is not None:
        return (
            f"step '{step.name}' streamed output {keys} but goes on to {result.next_step!r}:"
            " only the step that ends the flow can stream"
        )
    for key, text in streamed.items():
        if key in result.outputs and result.outputs[key] != text:
            return (
                f"step '{step.name}' streamed output '{key}' but returned a different value"
                " for it: return the streamed text, or leave the key out"
            )
    return None


def _jsonable(value: Any) -> Any:
    """``value`` as JSON data, for the stored run step (other objects as their repr)."""
    try:
        return json.loads(json.dumps(value, default=repr))
    except ValueError:  # a circular structure
        return repr(value)
