"""A flow with fan-out and fan-in: summarize each paragraph, then join the summaries.

appforge run apps_yaml/examples/flows/summarize_many.py --input text="$(cat notes.txt)"
appforge run apps_yaml/examples/flows/summarize_many.py --serve --port 8000
"""

from apps_yaml.flows import Flow, StepContext, StepResult

flow = Flow(
    "summarize-many",
    description="One summary line per paragraph.",
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
    """Fan in: receives every branch's summary, in order."""
    return StepResult(summary="\n".join(f"- {s}" for s in summary), paragraphs=len(summary))
