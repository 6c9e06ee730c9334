"""Use cases and the prompts in them: create, read, change, delete, search, bulk.

Each operation is written once (a generator, see ``calls``); ``PromptMethods`` is
its face on ``Client`` and ``AsyncPromptMethods`` on ``AsyncClient``. ``get_prompt``
is a prompt read (kept in the prompt cache); the changes are prompt writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from appforge.client.calls import AsyncDriven, Call, Op, SyncDriven, given, many, one
from appforge.client.prompt_models import (
    BulkResult,
    PromptDetail,
    PromptInfo,
    PromptSearchResult,
    UseCaseInfo,
)

# --- operations -------------------------------------------------------------------------


def _create_use_case(name: str, description: str) -> Op[UseCaseInfo]:
    r = yield Call("POST", "/api/v1/use-cases", json={"name": name, "description": description})
    return one(UseCaseInfo, r)


def _list_use_cases(skip: int, limit: int) -> Op[list[UseCaseInfo]]:
    r = yield Call("GET", "/api/v1/use-cases", params={"skip": skip, "limit": limit})
    return many(UseCaseInfo, r)


def _get_use_case(use_case_id: str) -> Op[UseCaseInfo]:
    r = yield Call("GET", f"/api/v1/use-cases/{use_case_id}")
    return one(UseCaseInfo, r)


def _update_use_case(
    use_case_id: str, name: str | None, description: str | None
) -> Op[UseCaseInfo]:
    body = given(name=name, description=description)
    r = yield Call("PATCH", f"/api/v1/use-cases/{use_case_id}", json=body)
    return one(UseCaseInfo, r)


def _delete_use_case(use_case_id: str) -> Op[None]:
    yield Call("DELETE", f"/api/v1/use-cases/{use_case_id}", prompt_cache="write")


def _create_prompt(
    use_case_id: str, name: str, description: str, tags: Sequence[str]
) -> Op[PromptInfo]:
    body = {"name": name, "description": description, "tags": list(tags)}
    r = yield Call("POST", f"/api/v1/use-cases/{use_case_id}/prompts", json=body)
    return one(PromptInfo, r)


def _list_prompts(
    use_case_id: str, tags: Sequence[str] | None, skip: int, limit: int
) -> Op[list[PromptInfo]]:
    params: dict[str, Any] = {"skip": skip, "limit": limit}
    if tags:
        params["tags"] = ",".join(tags)
    r = yield Call("GET", f"/api/v1/use-cases/{use_case_id}/prompts", params=params)
    return many(PromptInfo, r)


def _get_prompt(prompt_id: str) -> Op[PromptDetail]:
    r = yield Call("GET", f"/api/v1/prompts/{prompt_id}", prompt_cache="read")
    return one(PromptDetail, r)


def _update_prompt(
    prompt_id: str, name: str | None, description: str | None, tags: Sequence[str] | None
) -> Op[PromptInfo]:
    body = given(name=name, description=description, tags=None if tags is None else list(tags))
    r = yield Call("PATCH", f"/api/v1/prompts/{prompt_id}", json=body, prompt_cache="write")
    return one(PromptInfo, r)


def _delete_prompt(prompt_id: str) -> Op[None]:
    yield Call("DELETE", f"/api/v1/prompts/{prompt_id}", prompt_cache="write")


def _search_prompts(
    query: str,
    tags: Sequence[str],
    author: str | None,
    type: str | None,
    has_config: bool | None,
    page: int,
    limit: int,
) -> Op[PromptSearchResult]:
    filters = {"tags": list(tags), **given(author=author, type=type, hasConfig=has_config)}
    body = {"query": query, "filters": filters, "pagination": {"page": page, "limit": limit}}
    r = yield Call("POST", "/api/v1/prompts/search", json=body)
    return one(PromptSearchResult, r)


def _bulk_prompts(
    operation: str,
    prompts: Sequence[str | tuple[str, int]],
    environment: str | None,
    notes: str | None,
    atomic: bool,
    require: Mapping[str, Any] | None = None,
) -> Op[BulkResult]:
    items = [{"id": p} if isinstance(p, str) else {"id": p[0], "version": p[1]} for p in prompts]
    body: dict[str, Any] = {
        "operation": operation,
        "prompts": items,
        "atomic": atomic,
        **given(environment=environment, notes=notes),
    }
    if require is not None:
        body["require"] = dict(require)
    r = yield Call("POST", "/api/v1/prompts/bulk", json=body, prompt_cache="write")
    return one(BulkResult, r)


# --- Client -----------------------------------------------------------------------------


class PromptMethods(SyncDriven):
    """Use cases and prompts on ``Client``."""

    def create_use_case(self, name: str, description: str = "") -> UseCaseInfo:
        """A new use case (a folder of prompts)."""
        return self._drive(_create_use_case(name, description))

    def list_use_cases(self, skip: int = 0, limit: int = 100) -> list[UseCaseInfo]:
        """The use cases, oldest first."""
        return self._drive(_list_use_cases(skip, limit))

    def get_use_case(self, use_case_id: str) -> UseCaseInfo:
        """A use case with how many prompts it has."""
        return self._drive(_get_use_case(use_case_id))

    def update_use_case(
        self, use_case_id: str, *, name: str | None = None, description: str | None = None
    ) -> UseCaseInfo:
        """Rename or describe a use case; fields left as None are not changed."""
        return self._drive(_update_use_case(use_case_id, name, description))

    def delete_use_case(self, use_case_id: str) -> None:
        """Delete a use case with all its prompts and their versions."""
        return self._drive(_delete_use_case(use_case_id))

    def create_prompt(
        self, use_case_id: str, name: str, *, description: str = "", tags: Sequence[str] = ()
    ) -> PromptInfo:
        """A new prompt (without versions yet) in a use case."""
        return self._drive(_create_prompt(use_case_id, name, description, tags))

    def list_prompts(
        self,
        use_case_id: str,
        tags: Sequence[str] | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> list[PromptInfo]:
        """The prompts of a use case; with ``tags``, those having every tag."""
        return self._drive(_list_prompts(use_case_id, tags, skip, limit))

    def get_prompt(self, prompt_id: str) -> PromptDetail:
        """A prompt with its versions and their labels (kept in the prompt cache)."""
        return self._drive(_get_prompt(prompt_id))

    def update_prompt(
        self,
        prompt_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> PromptInfo:
        """Change a prompt's name, description or tags; fields left as None are not changed."""
        return self._drive(_update_prompt(prompt_id, name, description, tags))

    def delete_prompt(self, prompt_id: str) -> None:
        """Delete a prompt with its versions."""
        return self._drive(_delete_prompt(prompt_id))

    def search_prompts(
        self,
        query: str = "",
        *,
        tags: Sequence[str] = (),
        author: str | None = None,
        type: str | None = None,
        has_config: bool | None = None,
        page: int = 1,
        limit: int = 20,
    ) -> PromptSearchResult:
        """Prompts whose name, description or templates contain ``query``, filtered."""
        return self._drive(_search_prompts(query, tags, author, type, has_config, page, limit))

    def bulk_prompts(
        self,
        operation: str,
        prompts: Sequence[str | tuple[str, int]],
        *,
        environment: str | None = None,
        notes: str | None = None,
        atomic: bool = False,
        require: Mapping[str, Any] | None = None,
    ) -> BulkResult:
        """``deploy``/``label`` (items are ``(prompt_id, version)``) or ``delete`` (ids);
        a deploy with ``require`` (else each prompt's stored policy) moves nothing unless
        every prompt's evaluation passes (``ConflictError`` ``EVALUATION_FAILED``)."""
        return self._drive(_bulk_prompts(operation, prompts, environment, notes, atomic, require))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncPromptMethods(AsyncDriven):
    """Use cases and prompts on ``AsyncClient``."""

    async def create_use_case(self, name: str, description: str = "") -> UseCaseInfo:
        """A new use case (a folder of prompts)."""
        return await self._drive(_create_use_case(name, description))

    async def list_use_cases(self, skip: int = 0, limit: int = 100) -> list[UseCaseInfo]:
        """The use cases, oldest first."""
        return await self._drive(_list_use_cases(skip, limit))

    async def get_use_case(self, use_case_id: str) -> UseCaseInfo:
        """A use case with how many prompts it has."""
        return await self._drive(_get_use_case(use_case_id))

    async def update_use_case(
        self, use_case_id: str, *, name: str | None = None, description: str | None = None
    ) -> UseCaseInfo:
        """Rename or describe a use case; fields left as None are not changed."""
        return await self._drive(_update_use_case(use_case_id, name, description))

    async def delete_use_case(self, use_case_id: str) -> None:
        """Delete a use case with all its prompts and their versions."""
        return await self._drive(_delete_use_case(use_case_id))

    async def create_prompt(
        self, use_case_id: str, name: str, *, description: str = "", tags: Sequence[str] = ()
    ) -> PromptInfo:
        """A new prompt (without versions yet) in a use case."""
        return await self._drive(_create_prompt(use_case_id, name, description, tags))

    async def list_prompts(
        self,
        use_case_id: str,
        tags: Sequence[str] | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> list[PromptInfo]:
        """The prompts of a use case; with ``tags``, those having every tag."""
        return await self._drive(_list_prompts(use_case_id, tags, skip, limit))

    async def get_prompt(self, prompt_id: str) -> PromptDetail:
        """A prompt with its versions and their labels (kept in the prompt cache)."""
        return await self._drive(_get_prompt(prompt_id))

    async def update_prompt(
        self,
        prompt_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> PromptInfo:
        """Change a prompt's name, description or tags; fields left as None are not changed."""
        return await self._drive(_update_prompt(prompt_id, name, description, tags))

    async def delete_prompt(self, prompt_id: str) -> None:
        """Delete a prompt with its versions."""
        return await self._drive(_delete_prompt(prompt_id))

    async def search_prompts(
        self,
        query: str = "",
        *,
        tags: Sequence[str] = (),
        author: str | None = None,
        type: str | None = None,
        has_config: bool | None = None,
        page: int = 1,
        limit: int = 20,
    ) -> PromptSearchResult:
        """Prompts whose name, description or templates contain ``query``, filtered."""
        return await self._drive(
            _search_prompts(query, tags, author, type, has_config, page, limit)
        )

    async def bulk_prompts(
        self,
        operation: str,
        prompts: Sequence[str | tuple[str, int]],
        *,
        environment: str | None = None,
        notes: str | None = None,
        atomic: bool = False,
        require: Mapping[str, Any] | None = None,
    ) -> BulkResult:
        """``deploy``/``label`` (items are ``(prompt_id, version)``) or ``delete`` (ids);
        a deploy with ``require`` (else each prompt's stored policy) moves nothing unless
        every prompt's evaluation passes (``ConflictError`` ``EVALUATION_FAILED``)."""
        return await self._drive(
            _bulk_prompts(operation, prompts, environment, notes, atomic, require)
        )
