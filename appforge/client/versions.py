"""Versions of a prompt, their labels and deployments, diff, render, the apps that
pin a prompt, and the analytics of the runs that used it.

Each operation is written once (a generator, see ``calls``); ``VersionMethods`` is
its face on ``Client`` and ``AsyncVersionMethods`` on ``AsyncClient``. ``render`` is
a prompt read (kept in the prompt cache); new versions and label moves are writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from appforge.client.calls import AsyncDriven, Call, Op, SyncDriven, given, many, one, window
from appforge.client.models import PromptAnalytics
from appforge.client.prompt_models import (
    Dependent,
    Deployments,
    DeployResult,
    PromptDiff,
    PromptVersionInfo,
    RenderedPrompt,
)

# --- operations -------------------------------------------------------------------------


def _create_version(
    prompt_id: str,
    type: str,
    template_text: str | None,
    template_messages: Sequence[Mapping[str, str]] | None,
    model_defaults: Mapping[str, Any] | None,
    variables_schema: Mapping[str, Any] | None,
    variants: Sequence[Mapping[str, Any]] | None,
    commit_message: str | None,
) -> Op[PromptVersionInfo]:
    body = {"type": type} | given(
        template_text=template_text,
        template_messages=None if template_messages is None else [*map(dict, template_messages)],
        model_defaults=None if model_defaults is None else dict(model_defaults),
        variables_schema=None if variables_schema is None else dict(variables_schema),
        variants=None if variants is None else [*map(dict, variants)],
        commit_message=commit_message,
    )
    path = f"/api/v1/prompts/{prompt_id}/versions"
    r = yield Call("POST", path, json=body, prompt_cache="write")
    return one(PromptVersionInfo, r)


def _list_versions(prompt_id: str) -> Op[list[PromptVersionInfo]]:
    r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/versions")
    return many(PromptVersionInfo, r)


def _get_version(prompt_id: str, version: int) -> Op[PromptVersionInfo]:
    r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/versions/{version}")
    return one(PromptVersionInfo, r)


def _label(
    prompt_id: str,
    version: int,
    label: str,
    move: str,
    require: Mapping[str, Any] | None = None,
) -> Op[PromptVersionInfo]:
    path = f"/api/v1/prompts/{prompt_id}/versions/{version}/{move}"
    body: dict[str, Any] = {"label": label}
    if require is not None:
        body["require"] = dict(require)
    r = yield Call("POST", path, json=body, prompt_cache="write")
    return one(PromptVersionInfo, r)


def _deploy(
    prompt_id: str,
    environment: str,
    version: int,
    notes: str,
    require: Mapping[str, Any] | None = None,
) -> Op[DeployResult]:
    body: dict[str, Any] = {"environment": environment, "version": version, "notes": notes}
    if require is not None:
        body["require"] = dict(require)
    path = f"/api/v1/prompts/{prompt_id}/deploy"
    r = yield Call("POST", path, json=body, prompt_cache="write")
    return one(DeployResult, r)


def _rollback(prompt_id: str, environment: str, notes: str | None) -> Op[DeployResult]:
    body = {"environment": environment, "notes": notes}
    path = f"/api/v1/prompts/{prompt_id}/rollback"
    r = yield Call("POST", path, json=body, prompt_cache="write")
    return one(DeployResult, r)


def _deployments(prompt_id: str) -> Op[Deployments]:
    r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/deployments")
    return one(Deployments, r)


def _diff(prompt_id: str, from_version: int, to_version: int) -> Op[PromptDiff]:
    params = {"from": from_version, "to": to_version}
    r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/diff", params=params)
    return PromptDiff.model_validate(r.json()["diff"])


def _render(
    prompt_id: str,
    variables: dict[str, Any] | None,
    label: str | None,
    version: int | None,
    model_provider: str | None,
    model_name: str | None,
) -> Op[RenderedPrompt]:
    body: dict[str, Any] = {"variables": variables or {}}
    body.update(
        given(label=label, version=version, model_provider=model_provider, model_name=model_name)
    )
    path = f"/api/v1/prompts/{prompt_id}/render"
    r = yield Call("POST", path, json=body, prompt_cache="read")
    return one(RenderedPrompt, r)


def _dependents(prompt_id: str) -> Op[list[Dependent]]:
    r = yield Call("GET", f"/api/v1/prompts/{prompt_id}/dependents")
    return many(Dependent, r)


def _prompt_analytics(
    prompt_id: str, start: datetime | None, end: datetime | None, bucket: str
) -> Op[PromptAnalytics]:
    path = f"/api/v1/prompts/{prompt_id}/analytics"
    r = yield Call("GET", path, params=window(start, end, bucket))
    return one(PromptAnalytics, r)


# --- Client -----------------------------------------------------------------------------


class VersionMethods(SyncDriven):
    """Prompt versions, labels, deployments, diff and render on ``Client``."""

    def create_version(
        self,
        prompt_id: str,
        *,
        type: str,
        template_text: str | None = None,
        template_messages: Sequence[Mapping[str, str]] | None = None,
        model_defaults: Mapping[str, Any] | None = None,
        variables_schema: Mapping[str, Any] | None = None,
        variants: Sequence[Mapping[str, Any]] | None = None,
        commit_message: str | None = None,
    ) -> PromptVersionInfo:
        """A new version: ``text`` (``template_text``) or ``chat`` (``template_messages``)."""
        return self._drive(
            _create_version(
                prompt_id,
                type,
                template_text,
                template_messages,
                model_defaults,
                variables_schema,
                variants,
                commit_message,
            )
        )

    def list_versions(self, prompt_id: str) -> list[PromptVersionInfo]:
        """The versions of a prompt, newest first."""
        return self._drive(_list_versions(prompt_id))

    def get_version(self, prompt_id: str, version: int) -> PromptVersionInfo:
        """One version of a prompt, by number."""
        return self._drive(_get_version(prompt_id, version))

    def promote(
        self,
        prompt_id: str,
        version: int,
        label: str,
        *,
        require: Mapping[str, Any] | None = None,
    ) -> PromptVersionInfo:
        """Put ``label`` on a version (taking it from the version that had it); with
        ``require`` (``{"dataset", "app", "scorers", "min_pass_rate"}``) only if that
        evaluation passes (``ConflictError`` ``EVALUATION_FAILED`` otherwise)."""
        return self._drive(_label(prompt_id, version, label, "promote", require))

    def demote(self, prompt_id: str, version: int, label: str) -> PromptVersionInfo:
        """Take ``label`` off a version."""
        return self._drive(_label(prompt_id, version, label, "demote"))

    def deploy(
        self,
        prompt_id: str,
        environment: str,
        version: int,
        notes: str = "",
        *,
        require: Mapping[str, Any] | None = None,
    ) -> DeployResult:
        """Point an environment (a label) at a version, with notes for its history; with
        ``require`` (else the prompt's stored policy) only if that evaluation passes
        (``ConflictError`` ``EVALUATION_FAILED`` otherwise)."""
        return self._drive(_deploy(prompt_id, environment, version, notes, require))

    def rollback(self, prompt_id: str, environment: str, notes: str | None = None) -> DeployResult:
        """Move an environment back to the version it had before its last move."""
        return self._drive(_rollback(prompt_id, environment, notes))

    def deployments(self, prompt_id: str) -> Deployments:
        """Where each label points now, and every move of a label."""
        return self._drive(_deployments(prompt_id))

    def diff(self, prompt_id: str, from_version: int, to_version: int) -> PromptDiff:
        """What changed between two versions: template lines, model defaults, variables."""
        return self._drive(_diff(prompt_id, from_version, to_version))

    def render(
        self,
        prompt_id: str,
        variables: dict[str, Any] | None = None,
        *,
        label: str | None = None,
        version: int | None = None,
        model_provider: str | None = None,
        model_name: str | None = None,
    ) -> RenderedPrompt:
        """Render by ``version`` or ``label`` (default production, else latest); the model
        names pick a model-specific variant. Kept in the prompt cache."""
        return self._drive(
            _render(prompt_id, variables, label, version, model_provider, model_name)
        )

    def dependents(self, prompt_id: str) -> list[Dependent]:
        """The apps whose llm steps pin this prompt."""
        return self._drive(_dependents(prompt_id))

    def prompt_analytics(
        self,
        prompt_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str = "day",
    ) -> PromptAnalytics:
        """Figures of the runs that used the prompt, per version and per label."""
        return self._drive(_prompt_analytics(prompt_id, start, end, bucket))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncVersionMethods(AsyncDriven):
    """Prompt versions, labels, deployments, diff and render on ``AsyncClient``."""

    async def create_version(
        self,
        prompt_id: str,
        *,
        type: str,
        template_text: str | None = None,
        template_messages: Sequence[Mapping[str, str]] | None = None,
        model_defaults: Mapping[str, Any] | None = None,
        variables_schema: Mapping[str, Any] | None = None,
        variants: Sequence[Mapping[str, Any]] | None = None,
        commit_message: str | None = None,
    ) -> PromptVersionInfo:
        """A new version: ``text`` (``template_text``) or ``chat`` (``template_messages``)."""
        return await self._drive(
            _create_version(
                prompt_id,
                type,
                template_text,
                template_messages,
                model_defaults,
                variables_schema,
                variants,
                commit_message,
            )
        )

    async def list_versions(self, prompt_id: str) -> list[PromptVersionInfo]:
        """The versions of a prompt, newest first."""
        return await self._drive(_list_versions(prompt_id))

    async def get_version(self, prompt_id: str, version: int) -> PromptVersionInfo:
        """One version of a prompt, by number."""
        return await self._drive(_get_version(prompt_id, version))

    async def promote(
        self,
        prompt_id: str,
        version: int,
        label: str,
        *,
        require: Mapping[str, Any] | None = None,
    ) -> PromptVersionInfo:
        """Put ``label`` on a version (taking it from the version that had it); with
        ``require`` (``{"dataset", "app", "scorers", "min_pass_rate"}``) only if that
        evaluation passes (``ConflictError`` ``EVALUATION_FAILED`` otherwise)."""
        return await self._drive(_label(prompt_id, version, label, "promote", require))

    async def demote(self, prompt_id: str, version: int, label: str) -> PromptVersionInfo:
        """Take ``label`` off a version."""
        return await self._drive(_label(prompt_id, version, label, "demote"))

    async def deploy(
        self,
        prompt_id: str,
        environment: str,
        version: int,
        notes: str = "",
        *,
        require: Mapping[str, Any] | None = None,
    ) -> DeployResult:
        """Point an environment (a label) at a version, with notes for its history; with
        ``require`` (else the prompt's stored policy) only if that evaluation passes
        (``ConflictError`` ``EVALUATION_FAILED`` otherwise)."""
        return await self._drive(_deploy(prompt_id, environment, version, notes, require))

    async def rollback(
        self, prompt_id: str, environment: str, notes: str | None = None
    ) -> DeployResult:
        """Move an environment back to the version it had before its last move."""
        return await self._drive(_rollback(prompt_id, environment, notes))

    async def deployments(self, prompt_id: str) -> Deployments:
        """Where each label points now, and every move of a label."""
        return await self._drive(_deployments(prompt_id))

    async def diff(self, prompt_id: str, from_version: int, to_version: int) -> PromptDiff:
        """What changed between two versions: template lines, model defaults, variables."""
        return await self._drive(_diff(prompt_id, from_version, to_version))

    async def render(
        self,
        prompt_id: str,
        variables: dict[str, Any] | None = None,
        *,
        label: str | None = None,
        version: int | None = None,
        model_provider: str | None = None,
        model_name: str | None = None,
    ) -> RenderedPrompt:
        """Render by ``version`` or ``label`` (default production, else latest); the model
        names pick a model-specific variant. Kept in the prompt cache."""
        return await self._drive(
            _render(prompt_id, variables, label, version, model_provider, model_name)
        )

    async def dependents(self, prompt_id: str) -> list[Dependent]:
        """The apps whose llm steps pin this prompt."""
        return await self._drive(_dependents(prompt_id))

    async def prompt_analytics(
        self,
        prompt_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str = "day",
    ) -> PromptAnalytics:
        """Figures of the runs that used the prompt, per version and per label."""
        return await self._drive(_prompt_analytics(prompt_id, start, end, bucket))
