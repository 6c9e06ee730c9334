"""Python flows: fan-out, fan-in, managed prompts, failures — on the real local model."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from appforge.cli import main
from appforge.core.settings import Settings
from apps_yaml.events import Chunk, Failed, Outcome, Output, StepStarted
from apps_yaml.flows import Flow, StepContext, StepResult
from apps_yaml.runner import Dependencies
from providers.registry import ProviderRegistry
from runs.prompt_refs import StorePrompts

EXAMPLE = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples" / "flows"
TEXT = "Cats sleep most of the day.\n\nDogs like long walks in the park."


@pytest.fixture
def deps(local_provider: Any, tmp_path: Path) -> Dependencies:
    registry = ProviderRegistry(Settings(home=tmp_path), providers={"local": local_provider})
    return Dependencies(models=registry)


def _example() -> Flow:
    spec = importlib.util.spec_from_file_location("example_flow", EXAMPLE / "summarize_many.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flow: Flow = module.flow
    return flow


def _run(flow: Flow, inputs: dict[str, Any], deps: Dependencies) -> tuple[list[Any], Outcome]:
    events = list(flow.run(inputs, deps))
    outcome = Outcome()
    for e in events:
        outcome.add(e)
    return events, outcome


def _flow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("appforge-flow-step-")]


def test_flow_fans_out_and_in(deps: Dependencies):
    events, outcome = _run(_example(), {"text": TEXT}, deps)
    assert outcome.status == "succeeded", outcome.failure
    started = [e.step for e in events if isinstance(e, StepStarted)]
    assert started == ["split#1", "summarize#2", "summarize#3", "join#4"]
    summaries = [s["output"]["summary"] for s in outcome.steps if s["id"].startswith("summ")]
    assert outcome.output["paragraphs"] == 2
    assert outcome.output["points"] == summaries
    # The joining step streamed its answer: chunks while it ran, sent once, no Output.
    join_at = events.index(StepStarted("join#4", "flow"))
    chunks = [e for e in events if isinstance(e, Chunk)]
    assert len(chunks) > 1 and {c.key for c in chunks} == {"summary"}
    assert all(join_at < events.index(c) < join_at + 1 + len(chunks) for c in chunks)
    assert "".join(c.text for c in chunks) == outcome.output["summary"] != ""
    assert outcome.steps[-1]["output"]["summary"] == outcome.output["summary"]
    assert [e.key for e in events if isinstance(e, Output)] == ["points", "paragraphs"]
    assert _flow_threads() == []
    first = outcome.steps[1]
    assert first["input"] == {"part": "Cats sleep most of the day."}
    assert "Cats sleep" in first["calls"][0]["messages"][0]["content"]
    assert outcome.usage["completion_tokens"] == sum(
        s["usage"].get("completion_tokens", 0) for s in outcome.steps
    )


def test_flow_step_uses_managed_prompt(
    deps: Dependencies, make_client: Callable[..., TestClient], settings: Settings
):
    client = make_client(settings)
    uc = client.post("/api/v1/use-cases", json={"name": "F"}).json()["id"]
    pid = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "shout"}).json()["id"]
    body = {"type": "text", "template_text": "Repeat loudly: {{ word }}"}
    client.post(f"/api/v1/prompts/{pid}/versions", json=body)
    client.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
    flow = Flow("managed")

    @flow.step("say", prompt="shout", initial=True)
    def say(ctx: StepContext, word: str) -> StepResult:
        return StepResult(text=ctx.llm(variables={"word": word}, max_tokens=8, temperature=0))

    deps.prompts = StorePrompts(client.app.state.api.db)  # type: ignore[attr-defined]
    _, outcome = _run(flow, {"word": "hello"}, deps)
    assert outcome.status == "succeeded", outcome.failure
    step = outcome.steps[0]
    assert step["prompt"] == {"id": pid, "name": "shout", "version": 1, "label": "production"}
    assert step["calls"][0]["messages"] == [{"role": "user", "content": "Repeat loudly: hello"}]


def test_flow_failures_are_reported(deps: Dependencies):
    flow = Flow("broken")

    @flow.step("a", initial=True)
    def a(ctx: StepContext, mode: str) -> StepResult:
        if mode == "raise":
            raise KeyError("missing")
        if mode == "error":
            return StepResult(error="refused")
        if mode == "nowhere":
            return StepResult(next_step="zzz")
        return StepResult(next_step="b", x=1)

    @flow.step("b", one_to_many=True)
    def b(ctx: StepContext, x: int) -> StepResult:
        return StepResult(next_step="a", y=x)  # no list output: cannot fan out

    cases = {
        "raise": ("FLOW_STEP_FAILED", "KeyError"),
        "error": ("FLOW_STEP_FAILED", "refused"),
        "nowhere": ("FLOW_INVALID", "zzz"),
        "fanout": ("FLOW_INVALID", "exactly one list"),
    }
    for mode, (code, words) in cases.items():
        events, outcome = _run(flow, {"mode": mode}, deps)
        assert isinstance(events[-1], Failed), mode
        assert outcome.failure is not None and outcome.failure.code == code, mode
        assert words in outcome.failure.message, mode
        assert outcome.status == "failed"
    with pytest.raises(ValueError):
        flow.step("a")(a)


def test_flow_runs_from_the_cli(
    local_provider: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(
        main,
        ["run", str(EXAMPLE / "summarize_many.py"), "--input", f"text={TEXT}", "--json"],
        obj={"providers": {"local": local_provider}},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert '"paragraphs": 2' in result.stdout
    not_a_flow = tmp_path / "x.py"
    not_a_flow.write_text("x = 1\n")
    bad = CliRunner().invoke(main, ["run", str(not_a_flow)])
    assert bad.exit_code == 2 and "exactly one Flow" in bad.stderr


def test_flow_inputs_declared_or_read_from_the_initial_step():
    assert _example().app_document() == {
        "version": 1,
        "name": "summarize-many",
        "description": "Summarizes each paragraph, then all of them in one answer.",
        "type": "text",
        "flow": "summarize-many",
        "input": {
            "text": {
                "type": "string",
                "required": True,
                "description": "Paragraphs separated by blank lines.",
                "max_length": 20000,
            }
        },
    }
    flow = Flow("typed", history=2)

    @flow.step("a", initial=True)
    def a(ctx: StepContext, n: int, tags: list[str], ratio: float = 0.5, note: Any = None):
        return StepResult(n=n)

    assert flow.app_document()["type"] == "chat"
    assert {k: v.model_dump(exclude_defaults=True) for k, v in flow.input.items()} == {
        "n": {"type": "integer", "required": True},
        "tags": {"type": "array", "required": True},
        "ratio": {"type": "number", "default": 0.5},
        "note": {},
    }
    with pytest.raises(ValueError, match="identifier"):
        Flow("bad", input={"not ok": {"type": "string"}})
    with pytest.raises(ValueError):
        Flow("bad", input={"x": {"type": "uuid"}})


def test_flow_steps_see_the_session_history(deps: Dependencies):
    from apps_yaml.runner import HistoryTurn

    flow = Flow("recall", history=2)

    @flow.step("a", initial=True)
    def a(ctx: StepContext, msg: str) -> StepResult:
        return StepResult(seen=[t.input["msg"] for t in ctx.history], session=ctx.session_id)

    turns = [HistoryTurn({}, {"msg": f"m{i}"}, {"seen": []}) for i in range(3)]
    _, outcome = _run_with(flow, {"msg": "now"}, deps, session_id="s", history=turns)
    assert outcome.output == {"seen": ["m1", "m2"], "session": "s"}
    flow.history = 0  # a stateless flow sees no history
    _, outcome = _run_with(flow, {"msg": "now"}, deps, session_id="s", history=turns)
    assert outcome.output["seen"] == []


def _run_with(flow: Flow, inputs: dict[str, Any], deps: Dependencies, **kwargs: Any) -> Any:
    outcome = Outcome()
    events = list(flow.run(inputs, deps, **kwargs))
    for e in events:
        outcome.add(e)
    return events, outcome


def test_flow_output_must_be_json_and_step_detail_is_stored_as_json(deps: Dependencies):
    flow = Flow("objects")

    @flow.step("a", initial=True)
    def a(ctx: StepContext) -> StepResult:
        return StepResult(next_step="b", thing=object())

    @flow.step("b")
    def b(ctx: StepContext, thing: object) -> StepResult:
        return StepResult(thing=thing)

    events, outcome = _run(flow, {}, deps)
    assert outcome.failure is not None and outcome.failure.code == "FLOW_INVALID"
    assert "output 'thing'" in outcome.failure.message
    assert outcome.steps[0]["output"]["thing"].startswith("<object object")


def test_flow_cancelled_between_steps(deps: Dependencies):
    import threading

    cancel = threading.Event()
    flow = Flow("stops")

    @flow.step("a", initial=True)
    def a(ctx: StepContext) -> StepResult:
        cancel.set()
        return StepResult(next_step="b", x=1)

    @flow.step("b")
    def b(ctx: StepContext, x: int) -> StepResult:
        raise AssertionError("never runs")

    _, outcome = _run_with(flow, {}, deps, cancel=cancel)
    assert outcome.status == "cancelled"
    assert [s["status"] for s in outcome.steps] == ["cancelled"]


def _final_streamer(returns: str) -> Flow:
    """A flow whose last step streams ``answer``, then returns per ``returns``."""
    flow = Flow(f"stream-{returns}")

    @flow.step("start", initial=True)
    def start(ctx: StepContext, topic: str) -> StepResult:
        return StepResult(next_step="write", topic=topic)

    @flow.step("write")
    def write(ctx: StepContext, topic: str) -> StepResult:
        text = ctx.llm(f"Say hello about {topic}.", max_tokens=12, temperature=0, seed=1,
                       stream="answer")  # fmt: skip
        if returns == "same":
            return StepResult(answer=text, words=len(text.split()))
        if returns == "omitted":
            return StepResult(words=len(text.split()))
        if returns == "different":
            return StepResult(answer=text.strip() + "!")
        if returns == "goes-on":
            return StepResult(next_step="after", answer=text)
        raise RuntimeError("broke after streaming")

    @flow.step("after")
    def after(ctx: StepContext, answer: str) -> StepResult:
        return StepResult(answer=answer)

    return flow


def test_flow_final_step_streams_its_answer_once(deps: Dependencies):
    outputs = []
    for returns in ("same", "omitted"):
        events, outcome = _run(_final_streamer(returns), {"topic": "cats"}, deps)
        assert outcome.status == "succeeded", outcome.failure
        chunks = [e.text for e in events if isinstance(e, Chunk) and e.key == "answer"]
        assert len(chunks) > 1
        assert "".join(chunks) == outcome.output["answer"]
        assert [e.key for e in events if isinstance(e, Output)] == ["words"]
        # the stored step output has the streamed key, returned or not
        assert outcome.steps[-1]["output"]["answer"] == outcome.output["answer"]
        assert outcome.output["words"] == len(outcome.output["answer"].split())
        outputs.append(outcome.output)
    assert outputs[0] == outputs[1]
    assert _flow_threads() == []


def test_flow_stream_that_contradicts_the_output_fails(deps: Dependencies):
    cases = {
        "different": ("FLOW_INVALID", "returned a different value"),
        "goes-on": ("FLOW_INVALID", "goes on to 'after'"),
        "raises": ("FLOW_STEP_FAILED", "RuntimeError: broke after streaming"),
    }
    for returns, (code, words) in cases.items():
        events, outcome = _run(_final_streamer(returns), {"topic": "cats"}, deps)
        assert outcome.failure is not None and outcome.failure.code == code, returns
        assert words in outcome.failure.message, returns
        assert outcome.failure.step == "write" and outcome.status == "failed"
        # what was streamed is the stored (partial) output, nothing else
        streamed = "".join(e.text for e in events if isinstance(e, Chunk))
        assert streamed and outcome.output == {"answer": streamed}, returns
        assert not any(isinstance(e, Output) for e in events)
        assert outcome.steps[-1]["id"] == "write#2"
        assert outcome.steps[-1]["status"] == "failed"
        assert words in outcome.steps[-1]["error"]
    assert _flow_threads() == []


def test_flow_stream_refused_outside_the_final_step(deps: Dependencies):
    """A fan-out branch (or a step with others still to run) cannot stream: refused
    before any chunk, whatever the number of branches."""
    fan = Flow("fan")

    @fan.step("split", initial=True, one_to_many=True)
    def split(ctx: StepContext, n: int) -> StepResult:
        return StepResult(next_step="each", item=list(range(n)))

    @fan.step("each")
    def each(ctx: StepContext, item: int) -> StepResult:
        return StepResult(text=ctx.llm("Count.", max_tokens=4, stream="text"))

    for n in (1, 2):
        events, outcome = _run(fan, {"n": n}, deps)
        assert outcome.failure is not None and outcome.failure.code == "FLOW_INVALID"
        assert "fan-out branch" in outcome.failure.message and outcome.failure.step == "each"
        assert outcome.failure.status_code == 500
        assert not any(isinstance(e, Chunk) for e in events) and outcome.output == {}
        assert outcome.steps[-1]["calls"] == []  # refused before the model was called

    pair = Flow("pair")

    @pair.step("a", initial=True)
    def a(ctx: StepContext) -> StepResult:
        return StepResult(next_step=["b", "c"], x=1)

    @pair.step("b")
    def b(ctx: StepContext, x: int) -> StepResult:
        return StepResult(x=ctx.llm("Hi.", max_tokens=4, stream="x"))

    @pair.step("c")
    def c(ctx: StepContext, x: int) -> StepResult:
        return StepResult(y=x)

    _, outcome = _run(pair, {}, deps)
    assert outcome.failure is not None and outcome.failure.code == "FLOW_INVALID"
    assert "fan-out branch" in outcome.failure.message

    bad = Flow("bad-key")

    @bad.step("a", initial=True)
    def bad_key(ctx: StepContext) -> StepResult:
        return StepResult(x=ctx.llm("Hi.", max_tokens=4, stream="not a key"))

    _, outcome = _run(bad, {}, deps)
    assert outcome.failure is not None and outcome.failure.code == "FLOW_INVALID"
    assert "'not a key'" in outcome.failure.message
    assert _flow_threads() == []


def _long_streamer() -> Flow:
    flow = Flow("long")

    @flow.step("write", initial=True)
    def write(ctx: StepContext) -> StepResult:
        text = ctx.llm("Write a very long story about the sea.", max_tokens=400,
                       temperature=0, seed=1, stream="story")  # fmt: skip
        return StepResult(story=text)

    return flow


def test_flow_cancelled_mid_stream_keeps_the_partial_answer(deps: Dependencies):
    cancel = threading.Event()
    outcome = Outcome()
    chunks = 0
    for event in _long_streamer().run({}, deps, cancel=cancel):
        outcome.add(event)
        if isinstance(event, Chunk):
            chunks += 1
            if chunks == 3:
                cancel.set()
    assert outcome.status == "cancelled" and outcome.failure is not None
    assert outcome.failure.step == "write"
    assert outcome.output["story"] and outcome.steps[0]["status"] == "cancelled"
    assert 3 <= outcome.usage["completion_tokens"] < 400
    assert _flow_threads() == []


def test_flow_closed_mid_stream_stops_the_step_thread(deps: Dependencies):
    cancel = threading.Event()
    events = _long_streamer().run({}, deps, cancel=cancel)
    first = next(e for e in events if isinstance(e, Chunk))
    assert first.key == "story" and _flow_threads()
    events.close()  # the consumer goes away: the step is cancelled and joined
    assert cancel.is_set()
    assert _flow_threads() == []
