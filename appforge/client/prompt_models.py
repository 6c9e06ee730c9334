"""Typed results of managed prompts (use cases, prompts, versions, labels and
deployments, render, diff, search, bulk) and of webhooks.

Deployments keep the API's camelCase field names (``promptId``, ``previousVersion``),
as the managed-prompts reference names them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from appforge.client.models import Result

# --- use cases and prompts --------------------------------------------------------------


class UseCaseInfo(Result):
    id: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    prompt_count: int


class PromptInfo(Result):
    id: str
    use_case_id: str
    name: str
    description: str
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    version_count: int
    latest_version: int | None = None


class VersionSummary(Result):
    version_number: int
    labels: list[str]
    created_at: datetime


class PromptDetail(PromptInfo):
    """A prompt with each of its versions and their labels."""

    versions: list[VersionSummary]


class PromptVersionInfo(Result):
    """One version of a prompt: its template (text or chat messages) and labels."""

    id: str
    prompt_id: str
    version_number: int
    type: str
    template_text: str | None = None
    template_messages: list[dict[str, Any]] | None = None
    model_defaults: dict[str, Any]
    variables_schema: dict[str, Any] | None = None
    variants: list[dict[str, Any]] = []
    variables: list[str]
    labels: list[str]
    created_at: datetime
    created_by: str | None = None
    commit_message: str | None = None


# --- labels and deployments -------------------------------------------------------------


class DeployResult(Result):
    """A move of an environment (deploy or rollback), with the API's field names."""

    promptId: str
    environment: str
    version: int
    previousVersion: int | None = None
    deployedAt: datetime
    deployedBy: str | None = None
    notes: str | None = None
    evaluationId: str | None = None  # the evaluation a gated move passed


class Deployment(Result):
    """Where a label (environment) points now."""

    environment: str
    version: int
    deployedAt: datetime
    deployedBy: str | None = None


class DeploymentMove(Result):
    """One move of a label: promote, demote, deploy or rollback."""

    environment: str
    action: str
    version: int | None = None
    previousVersion: int | None = None
    at: datetime
    by: str | None = None
    notes: str | None = None
    evaluationId: str | None = None


class Deployments(Result):
    deployments: list[Deployment]
    history: list[DeploymentMove]


class Dependent(Result):
    """An app step that pins a prompt, by label or by version."""

    app_uuid: str
    name: str
    step: str
    label: str | None = None
    version: int | None = None


# --- render and diff --------------------------------------------------------------------


class RenderedPrompt(Result):
    """A version rendered with variables: ``text`` (text prompts) or ``messages`` (chat)."""

    prompt_id: str
    version_number: int
    label: str | None = None
    type: str
    text: str | None = None
    messages: list[dict[str, str]] | None = None
    model_defaults: dict[str, Any]
    variant: dict[str, str | None] | None = None


class TypeChange(Result):
    old: str = Field(alias="from")
    new: str = Field(alias="to")


class LineChange(Result):
    """An added, removed or modified template line (chat lines: ``[i] role: text``)."""

    type: str
    line: int
    content: str
    old_line: int | None = None
    old_content: str | None = None


class DefaultChange(Result):
    """An added, removed or modified model default."""

    type: str
    key: str
    old: Any = Field(default=None, alias="from")
    new: Any = Field(default=None, alias="to")


class VariableChanges(Result):
    added: list[str]
    removed: list[str]


class DiffSummary(Result):
    additions: int
    deletions: int
    modifications: int
    model_defaults: int


class PromptDiff(Result):
    """What changed from one version to another (the API's ``from`` and ``to``)."""

    from_version: int = Field(alias="from")
    to_version: int = Field(alias="to")
    type: TypeChange
    changes: list[LineChange]
    model_defaults: list[DefaultChange]
    variables: VariableChanges
    variables_schema_changed: bool
    summary: DiffSummary
    unified: str


# --- search and bulk --------------------------------------------------------------------


class PageInfo(Result):
    page: int
    limit: int
    total: int
    pages: int


class PromptSearchResult(Result):
    prompts: list[PromptInfo]
    pagination: PageInfo


class BulkItemResult(Result):
    id: str
    ok: bool
    error: dict[str, Any] | None = None


class BulkResult(Result):
    """Per prompt, whether the operation applied; ``atomic``: all or nothing."""

    operation: str
    atomic: bool
    applied: bool
    succeeded: int
    failed: int
    results: list[BulkItemResult]


# --- webhooks ---------------------------------------------------------------------------


class WebhookInfo(Result):
    """A webhook subscription (never its secret)."""

    id: str
    url: str
    events: list[str]
    active: bool
    created_by: str | None = None
    created_at: datetime


class DeliveryAttempt(Result):
    at: datetime
    status_code: int | None = None
    error: str | None = None
    ms: float


class WebhookDeliveryInfo(Result):
    """One event sent (or to be sent) to a webhook, with each attempt."""

    id: str
    webhook_id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None
    payload: dict[str, Any]
    log: list[DeliveryAttempt] = []
