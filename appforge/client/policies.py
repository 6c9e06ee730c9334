"""Evaluation policies: the requirement (``{"dataset", "app"?, "scorers",
"min_pass_rate"}``) stored on a prompt or app that gates its promotes, deploys or
restores when they give none.

Each operation is written once (a generator, see ``calls``); ``PolicyMethods`` is
its face on ``Client`` and ``AsyncPolicyMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from appforge.client.calls import AsyncDriven, Call, Op, SyncDriven, one
from appforge.client.eval_models import EvaluationPolicy

Subject = Literal["prompt", "app"]
_PATHS = {"prompt": "/api/v1/prompts/{}/policy", "app": "/api/apps/{}/policy"}


def _set_policy(subject: Subject, ref: str, require: Mapping[str, Any]) -> Op[EvaluationPolicy]:
    r = yield Call("PUT", _PATHS[subject].format(ref), json=dict(require))
    return one(EvaluationPolicy, r)


def _get_policy(subject: Subject, ref: str) -> Op[EvaluationPolicy]:
    r = yield Call("GET", _PATHS[subject].format(ref))
    return one(EvaluationPolicy, r)


def _delete_policy(subject: Subject, ref: str) -> Op[None]:
    yield Call("DELETE", _PATHS[subject].format(ref))


class PolicyMethods(SyncDriven):
    """Evaluation policies of prompts and apps on ``Client``."""

    def set_prompt_policy(self, prompt_id: str, require: Mapping[str, Any]) -> EvaluationPolicy:
        """Gate the prompt's promotes and deploys that give no ``require`` (it names
        the ``app`` to evaluate with)."""
        return self._drive(_set_policy("prompt", prompt_id, require))

    def get_prompt_policy(self, prompt_id: str) -> EvaluationPolicy:
        """The prompt's policy (``NotFoundError`` ``POLICY_NOT_FOUND`` if none)."""
        return self._drive(_get_policy("prompt", prompt_id))

    def delete_prompt_policy(self, prompt_id: str) -> None:
        """Drop the prompt's policy."""
        return self._drive(_delete_policy("prompt", prompt_id))

    def set_app_policy(self, uuid: str, require: Mapping[str, Any]) -> EvaluationPolicy:
        """Gate the app's restores that give no ``require`` (``app`` defaults to it)."""
        return self._drive(_set_policy("app", uuid, require))

    def get_app_policy(self, uuid: str) -> EvaluationPolicy:
        """The app's policy (``NotFoundError`` ``POLICY_NOT_FOUND`` if none)."""
        return self._drive(_get_policy("app", uuid))

    def delete_app_policy(self, uuid: str) -> None:
        """Drop the app's policy."""
        return self._drive(_delete_policy("app", uuid))


class AsyncPolicyMethods(AsyncDriven):
    """Evaluation policies of prompts and apps on ``AsyncClient``."""

    async def set_prompt_policy(
        self, prompt_id: str, require: Mapping[str, Any]
    ) -> EvaluationPolicy:
        """Gate the prompt's promotes and deploys that give no ``require`` (it names
        the ``app`` to evaluate with)."""
        return await self._drive(_set_policy("prompt", prompt_id, require))

    async def get_prompt_policy(self, prompt_id: str) -> EvaluationPolicy:
        """The prompt's policy (``NotFoundError`` ``POLICY_NOT_FOUND`` if none)."""
        return await self._drive(_get_policy("prompt", prompt_id))

    async def delete_prompt_policy(self, prompt_id: str) -> None:
        """Drop the prompt's policy."""
        return await self._drive(_delete_policy("prompt", prompt_id))

    async def set_app_policy(self, uuid: str, require: Mapping[str, Any]) -> EvaluationPolicy:
        """Gate the app's restores that give no ``require`` (``app`` defaults to it)."""
        return await self._drive(_set_policy("app", uuid, require))

    async def get_app_policy(self, uuid: str) -> EvaluationPolicy:
        """The app's policy (``NotFoundError`` ``POLICY_NOT_FOUND`` if none)."""
        return await self._drive(_get_policy("app", uuid))

    async def delete_app_policy(self, uuid: str) -> None:
        """Drop the app's policy."""
        return await self._drive(_delete_policy("app", uuid))
