"""Apps that pin managed prompts: resolving a ``PromptRef`` and finding dependents.

This adapter sits in the run service because it joins two packages below it:
it reads the prompts store and produces the app engine's ``InlinePrompt``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from apps_yaml.events import PromptSource
from apps_yaml.runner import ResolvedPrompt
from apps_yaml.schema import InlinePrompt, Message
from prompts import labels, store
from prompts.errors import PromptsError
from prompts.tables import Prompt
from runs.tables import App


class StorePrompts:
    """The engine's ``PromptResolver``, reading the prompts store (one session per call)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def resolve(self, ref: str, label: str, version: int | None = None) -> ResolvedPrompt:
        with self.factory() as db:
            prompt = store.find_prompt(db, ref)
            row, found_by = labels.resolve(db, prompt.id, None if version else label, version)
            if row.type == "text":
                inline = InlinePrompt(user=row.template_text)
            else:
                inline = InlinePrompt(
                    messages=[Message.model_validate(m) for m in row.template_messages or []]
                )
            source = PromptSource(prompt.id, prompt.name, row.version_number, found_by)
            return ResolvedPrompt(prompt=inline, source=source)


def prompt_exists(db: Session, ref: str, label: str, version: int | None = None) -> bool:
    """Whether an app may pin ``ref`` at ``version`` (if given) or ``label``."""
    try:
        prompt = store.find_prompt(db, ref)
        labels.resolve(db, prompt.id, None if version else label, version)
    except PromptsError:
        return False
    return True


def dependents(db: Session, prompt: Prompt) -> list[dict[str, Any]]:
    """Each llm step of each app that refers to ``prompt`` by id or name."""
    out: list[dict[str, Any]] = []
    for app_uuid, name, document in db.execute(
        select(App.uuid, App.name, App.document).order_by(App.created_at)
    ):
        for step in document.get("steps", []):
            ref = step.get("prompt") if step.get("kind") == "llm" else None
            if isinstance(ref, dict) and ref.get("ref") in (prompt.id, prompt.name):
                pinned = ref.get("version")
                out.append(
                    {
                        "app_uuid": app_uuid,
                        "name": name,
                        "step": step["id"],
                        "label": None if pinned else ref.get("label", "production"),
                        "version": pinned,
                    }
                )
    return out
