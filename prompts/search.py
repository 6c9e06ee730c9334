"""Search prompts by text in their name, description and templates, with filters."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from prompts.tables import Prompt, PromptVersion


def search(
    db: Session,
    query: str,
    tags: Sequence[str] = (),
    author: str | None = None,
    type_: str | None = None,
    has_config: bool | None = None,
) -> list[Prompt]:
    """Prompts matching every filter, most recently updated first.

    ``query`` matches (case-insensitively) the name, the description, or a
    template of any version; ``author`` is the prompt's or any version's
    creator; ``type_`` and ``has_config`` look at the newest version.
    """
    needle = query.lower().strip()
    versions: dict[str, list[PromptVersion]] = {}
    for v in db.scalars(select(PromptVersion).order_by(PromptVersion.version_number.desc())):
        versions.setdefault(v.prompt_id, []).append(v)
    found: list[Prompt] = []
    for prompt in db.scalars(select(Prompt).order_by(Prompt.updated_at.desc(), Prompt.id)):
        own = versions.get(prompt.id, [])
        if not set(tags) <= set(prompt.tags or []):
            continue
        if (
            author is not None
            and author != prompt.created_by
            and all(v.created_by != author for v in own)
        ):
            continue
        newest = own[0] if own else None
        if type_ is not None and (newest is None or newest.type != type_):
            continue
        if has_config is not None and bool(newest and newest.model_defaults) != has_config:
            continue
        if needle and not any(needle in text.lower() for text in _texts(prompt, own)):
            continue
        found.append(prompt)
    return found


def _texts(prompt: Prompt, versions: Sequence[PromptVersion]) -> list[str]:
    out = [prompt.name, prompt.description]
    for v in versions:
        out.append(v.template_text or "")
        out.extend(str(m.get("content", "")) for m in v.template_messages or [])
    return out
