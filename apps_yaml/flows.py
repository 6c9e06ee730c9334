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
        return StepResult(summary=" ".join(summary))

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
and the managed prompt version used); the outputs arrive whole, at the end.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
import typing
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from apps_yaml import engine
from apps_yaml.engine import (
    Dependencies,
    Event,
    Failed,
    HistoryTurn,
    Output,
    StepFinished,
    StepStarted,
)
from apps_yaml.errors import AppsYamlError
from apps_yaml.schema import IDENT, InlinePrompt, InputField, LlmParams, LlmStep
from providers.base import ChatMessage, Completion, GenerationParams
from providers.errors import ProviderError

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


@dataclass
class StepContext:
    """Handed to each step: its managed prompt (if any) and a way to call the model."""

    step: str
    deps: Dependencies
    model: str
    prompt: InlinePrompt | None = None
    prompt_source: dict[str, Any] | None = None
    cancel: threading.Event | None = None
    session_id: str | None = None
    history: Sequence[HistoryTurn] = ()
    usage: dict[str, int] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def llm(
        self,
        user: str | None = None,
        *,
        system: str | None = None,
        variables: Mapping[str, Any] | None = None,
        model: str | None = None,
        **params: Any,
    ) -> str:
        """The model's answer: to the step's managed prompt rendered with ``variables``,
        or to ``user`` (and ``system``) text."""
        if self.prompt is not None and user is None:
            step = LlmStep(id="flow", kind="llm", prompt=self.prompt)
            messages = engine.render_messages(self.prompt, dict(variables or {}), (), step)
        else:
            if user is None:
                raise ValueError(f"step '{self.step}' has no prompt: give the user text")
            messages = [ChatMessage(role="user", content=user)]
            if system:
                messages.insert(0, ChatMessage(role="system", content=system))
        provider, name = self.deps.models.resolve(model or self.model)
        checked = LlmParams.model_validate(params)
        completion: Completion | None = None
        for piece in provider.stream(
            name, messages, GenerationParams(**checked.model_dump()), self.cancel
        ):
            if isinstance(piece, Completion):
                completion = piece
        assert completion is not None
        for key, value in completion.usage.as_dict().items():
            self.usage[key] = self.usage.get(key, 0) + value
        self.calls.append({"model": completion.model, "messages": messages})
        return completion.text


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
    ) -> Iterator[Event]:
        """Run from the initial step; yield the engine's events.

        ``history`` (earlier turns of the session, oldest first) reaches the
        steps as ``ctx.history``, cut to the flow's ``history`` turns.
        """
        turns = list(history)[-self.history :] if self.history else []
        queue: list[tuple[FlowStep, dict[str, Any]]] = [(self.initial, dict(inputs))]
        waiting: dict[str, list[dict[str, Any]]] = {}
        final: dict[str, Any] = {}
        runs = 0
        while queue or waiting:
            if not queue:  # every branch arrived: run each fan-in once, on lists
                name, arrived = next(iter(waiting.items()))
                del waiting[name]
                keys = list(dict.fromkeys(k for outputs in arrived for k in outputs))
                queue.append((self.steps[name], {k: [o.get(k) for o in arrived] for k in keys}))
            step, kwargs = queue.pop(0)
            if cancel is not None and cancel.is_set():
                yield Failed("CANCELLED", "the run was cancelled", step.name, 499)
                return
            runs += 1
            label = f"{step.name}#{runs}"
            ctx = StepContext(
                step=step.name,
                deps=deps,
                model=self.model,
                cancel=cancel,
                session_id=session_id,
                history=turns,
            )
            result = yield from self._run_step(step, label, kwargs, ctx)
            if result is None:
                return
            nexts = result.next_step
            if nexts is None:
                final.update(result.outputs)
                continue
            for target in [nexts] if isinstance(nexts, str) else list(nexts):
                if target not in self.steps:
                    yield Failed(
                        "FLOW_INVALID", f"step '{step.name}' names no step '{target}'", step.name
                    )
                    return
                try:
                    branches = self._fan_out(step, result.outputs)
                except ValueError as exc:
                    yield Failed("FLOW_INVALID", str(exc), step.name)
                    return
                for outputs in branches:
                    if self.steps[target].many_to_one:
                        waiting.setdefault(target, []).append(outputs)
                    else:
                        queue.append((self.steps[target], outputs))
        for key, value in final.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                yield Failed(
                    "FLOW_INVALID",
                    f"output '{key}' is a {type(value).__name__}, not JSON data",
                    None,
                )
                return
        for key, value in final.items():
            yield Output(key, value)

    def _fan_out(self, step: FlowStep, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        if not step.one_to_many:
            return [outputs]
        lists = [k for k, v in outputs.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"one_to_many step '{step.name}' must return exactly one list output")
        key = lists[0]
        return [{**outputs, key: item} for item in outputs[key]]

    def _run_step(
        self, step: FlowStep, label: str, kwargs: dict[str, Any], ctx: StepContext
    ) -> Generator[Event, None, StepResult | None]:
        yield StepStarted(label, "flow")
        deps = ctx.deps
        started = time.perf_counter()
        # Our own components (providers, prompts) keep their error codes; any other
        # exception is the flow's code failing: a failed run, not a crash.
        failure: Failed | None = None
        try:
            if step.prompt is not None:
                if deps.prompts is None:
                    raise RuntimeError("managed prompts are not available here")
                resolved = deps.prompts.resolve(step.prompt, step.label, None)
                ctx.prompt, ctx.prompt_source = resolved.prompt, resolved.source
            result = step.func(ctx, **kwargs)
            if not isinstance(result, StepResult):
                raise TypeError(
                    f"step '{step.name}' returned {type(result).__name__}, not a StepResult"
                )
        except (AppsYamlError, ProviderError) as exc:
            result = StepResult(error=exc.message)
            failure = Failed(exc.code, exc.message, step.name, exc.status_code)
        except Exception as exc:
            result = StepResult(error=f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        cancelled = ctx.cancel is not None and ctx.cancel.is_set()
        status = "failed" if result.error else "cancelled" if cancelled else "succeeded"
        detail: dict[str, Any] = {
            "input": _jsonable(kwargs),
            "output": _jsonable(result.outputs),
            "status": status,
            "calls": ctx.calls,
        }
        if result.error:
            detail["error"] = result.error
        if ctx.prompt_source is not None:
            detail["prompt"] = ctx.prompt_source
        yield StepFinished(label, "flow", latency, dict(ctx.usage), detail)
        if result.error:
            yield failure or Failed("FLOW_STEP_FAILED", result.error, step.name, 500)
            return None
        if cancelled:  # the model call stopped early: its output is not the step's
            yield Failed("CANCELLED", "the run was cancelled", step.name, 499)
            return None
        return result


def _jsonable(value: Any) -> Any:
    """``value`` as JSON data, for the stored run step (other objects as their repr)."""
    try:
        return json.loads(json.dumps(value, default=repr))
    except ValueError:  # a circular structure
        return repr(value)
