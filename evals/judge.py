"""The ``judge`` scorer: a managed prompt, rendered with the case's ``input``, the run's
``output`` and the case's ``expected``, is run by a model, which answers with a score.

The answer's first number is the score: taken as is in [0, 1], out of 10 up to 10,
out of 100 up to 100 (``8/10``, ``Score: 0.8`` and ``80`` all read 0.8). The case
passes at ``threshold`` (default 0.5). The rendered prompt and the answer are kept
with the result (``prompt``, ``answer``). The model is called at temperature 0 with
a small token budget; a prompt or model that fails makes the scorer fail with the
error as its reason, not the evaluation.
"""

from __future__ import annotations

import re
import threading
from typing import Any, cast

from sqlalchemy.orm import Session, sessionmaker

from appforge.core.errors import AppforgeError
from evals.scorers import CaseRun, Score, ScorerSpec
from prompts import labels, store
from prompts.render import render
from providers.base import ChatMessage, GenerationParams
from providers.registry import ProviderRegistry

_FIRST_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PASSING = 0.5
_MAX_TOKENS = 32


def read_score(answer: str) -> float | None:
    """The score an answer gives, in [0, 1], or None if it gives none."""
    found = _FIRST_NUMBER.search(answer)
    if found is None:
        return None
    value = float(found.group(0))
    for scale in (1.0, 10.0, 100.0):
        if value <= scale:
            return value / scale
    return None


class Judge:
    """Scores a case's run with a model, reading the prompts store once per case."""

    def __init__(self, factory: sessionmaker[Session], models: ProviderRegistry) -> None:
        self.db = factory
        self.models = models

    def messages(self, spec: ScorerSpec, run: CaseRun) -> list[ChatMessage]:
        """The judge prompt rendered for this case (``PROMPT_NOT_FOUND``, ...)."""
        with self.db() as db:
            prompt = store.find_prompt(db, spec.prompt or "")
            version, _ = labels.resolve(db, prompt.id, spec.label or "production")
            given = {"input": run.input, "output": run.output, "expected": run.expected}
            wanted = {k: v for k, v in given.items() if k in set(version.variables)}
            rendered = render(version, wanted)
        if rendered.messages is not None:
            return [cast(ChatMessage, dict(m)) for m in rendered.messages]
        return [ChatMessage(role="user", content=rendered.text or "")]

    def __call__(
        self, spec: ScorerSpec, run: CaseRun, cancel: threading.Event | None = None
    ) -> Score:
        """The case's score; the model call stops when ``cancel`` is set (its caller then
        drops the score)."""
        threshold = _PASSING if spec.threshold is None else spec.threshold
        messages: list[ChatMessage] = []
        try:
            messages = self.messages(spec, run)
            provider, model = self.models.resolve(spec.model or "default")
            params = GenerationParams(temperature=0, max_tokens=_MAX_TOKENS, seed=0)
            with provider.stream(model, messages, params, cancel) as generation:
                answer = generation.result().text
        except AppforgeError as exc:
            extra: dict[str, Any] = {"prompt": messages, "answer": None}
            return Score(spec.key, 0.0, False, f"the judge failed: {exc.code}", extra)
        extra = {"prompt": messages, "answer": answer}
        score = read_score(answer)
        if score is None:
            return Score(spec.key, 0.0, False, "the judge's answer holds no score", extra)
        passed = score >= threshold
        return Score(spec.key, score, passed, f"judged {score:g} (pass at {threshold:g})", extra)
