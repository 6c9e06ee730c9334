"""The one shape of everything that runs an app, and what it needs from below.

Two kinds of app run: a YAML app's steps (:class:`apps_yaml.engine.AppRunner`)
and a Python flow (:class:`apps_yaml.flows.Flow`). Both are a :class:`Runner`,
so whoever runs them (the run service) holds one and never asks which it is.
A runner gets its models, managed prompts and retrieval through
:class:`Dependencies`, wired once by the run service.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from appforge.core.budget import Limits
from apps_yaml.events import Event, PromptSource
from apps_yaml.schema import InlinePrompt
from providers.base import Provider


class ModelResolver(Protocol):
    def resolve(self, model: str) -> tuple[Provider, str]: ...


class Retriever(Protocol):
    def search(
        self,
        datasources: Sequence[str],
        query: str,
        top_k: int,
        where: dict[str, Any] | None,
        mode: Literal["vector", "keyword", "hybrid"] | None = None,
        keyword_weight: float = 0.5,
        cancel: threading.Event | None = None,
    ) -> list[dict[str, Any]]:
        """Chunks as ``{"id", "text", "score", "metadata"}``, best first; ``mode`` None:
        the datasources' own. Once ``cancel`` is set the search stops or is no longer
        waited for (it fails with code ``CANCELLED``)."""
        ...


@dataclass(frozen=True)
class ResolvedPrompt:
    """A managed prompt as an inline prompt, and which stored version it is."""

    prompt: InlinePrompt
    source: PromptSource


class PromptResolver(Protocol):
    def resolve(self, ref: str, label: str, version: int | None = None) -> ResolvedPrompt:
        """The managed prompt's templates at ``version`` (if given) or ``label``.

        Its templates read the prompt's variables (the ``PromptRef.variables``
        rendered from the app's context), not the app's context itself.
        """
        ...


@dataclass
class Dependencies:
    models: ModelResolver
    retriever: Retriever | None = None
    prompts: PromptResolver | None = None
    template_limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class HistoryTurn:
    """An earlier turn of the session: per llm step, the user and assistant text; and the
    turn's input and output (what a Python flow sees as ``ctx.history``)."""

    transcript: Mapping[str, Mapping[str, str]]
    input: Mapping[str, Any] = field(default_factory=dict)
    output: Mapping[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """Runs one app: yields events until done or failed.

    ``history`` is how many earlier turns of the session the run reads (0: none);
    the caller loads that many, oldest first, and passes them to :meth:`run`.
    Setting ``cancel`` stops the run (a model at its next token); closing the
    iterator early does too.
    """

    @property
    def history(self) -> int: ...

    def run(
        self,
        inputs: Mapping[str, Any],
        deps: Dependencies,
        *,
        session_id: str | None = None,
        history: Sequence[HistoryTurn] = (),
        cancel: threading.Event | None = None,
    ) -> Generator[Event, None, None]: ...
