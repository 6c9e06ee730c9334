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

Running a flow file is a local, trusted action (``appforge run flow.py``); the
API never accepts Python code. ``run`` yields the same events as the YAML
engine, so the CLI and the API store and stream flows like any app.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from apps_yaml import engine
from apps_yaml.engine import Dependencies, Event, Failed, Output, StepFinished, StepStarted
from apps_yaml.schema import InlinePrompt, LlmParams, LlmStep
from providers.base import ChatMessage, Completion, GenerationParams


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

    def __init__(self, name: str, *, model: str = "default", description: str = "") -> None:
        self.name = name
        self.model = model
        self.description = description
        self.steps: dict[str, FlowStep] = {}

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
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Run from the initial step; yield the engine's events."""
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
            result = yield from self._run_step(step, label, kwargs, deps, cancel)
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
        self,
        step: FlowStep,
        label: str,
        kwargs: dict[str, Any],
        deps: Dependencies,
        cancel: threading.Event | None,
    ) -> Generator[Event, None, StepResult | None]:
        yield StepStarted(label, "flow")
        ctx = StepContext(step=step.name, deps=deps, model=self.model, cancel=cancel)
        started = time.perf_counter()
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
        except Exception as exc:  # the flow's own code failed: a failed run, not a crash
            result = StepResult(error=f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        detail: dict[str, Any] = {
            "input": kwargs,
            "output": result.outputs,
            "status": "failed" if result.error else "succeeded",
            "calls": ctx.calls,
        }
        if ctx.prompt_source is not None:
            detail["prompt"] = ctx.prompt_source
        yield StepFinished(label, "flow", latency, dict(ctx.usage), detail)
        if result.error:
            yield Failed("FLOW_STEP_FAILED", result.error, step.name, 500)
            return None
        return result
