"""A flow with fan-out and fan-in: summarize each paragraph, then join the summaries.

The joining step ends the flow and streams its answer (``stream="summary"``):
through the run API the summary arrives as chunks while the model writes it.

appforge run apps_yaml/examples/flows/summarize_many.py --input text="$(cat notes.txt)"
appforge run apps_yaml/examples/flows/summarize_many.py --serve --port 8000
"""

from apps_yaml.flows import Flow, StepContext, StepResult

flow = Flow(
    "summarize-many",
    description="Summarizes each paragraph, then all of them in one answer.",
    input={
        "text": {
            "type": "string",
            "required": True,
            "max_length": 20000,
            "description": "Paragraphs separated by blank lines.",
        }
    },
)


@flow.step("split", initial=True, one_to_many=True)
def split(ctx: StepContext, text: str) -> StepResult:
    """Fan out: one branch per paragraph."""
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    return StepResult(next_step="summarize", part=parts)


@flow.step("summarize")
def summarize(ctx: StepContext, part: str) -> StepResult:
    """Runs once per paragraph."""
    summary = ctx.llm(
        f"Summarize this in one short sentence:\n\n{part}",
        temperature=0,
        seed=1,
        max_tokens=40,
    )
    return StepResult(next_step="join", summary=summary.strip())


@flow.step("join", many_to_one=True)
def join(ctx: StepContext, summary: list[str]) -> StepResult:
    """Fan in: one answer from every branch's summary, streamed as the model writes it."""
    points = "\n".join(f"- {s}" for s in summary)
    answer = ctx.llm(
        f"Combine these points into one short paragraph:\n\n{points}",
        temperature=0,
        seed=1,
        max_tokens=80,
        stream="summary",
    )
    # The streamed key is returned exactly as streamed (or could be left out).
    return StepResult(summary=answer, points=summary, paragraphs=len(summary))
