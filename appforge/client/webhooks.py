"""Webhooks (admin tokens only): subscriptions to events, and their delivery log.

Each operation is written once (a generator, see ``calls``); ``WebhookMethods`` is
its face on ``Client`` and ``AsyncWebhookMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

from collections.abc import Sequence

from appforge.client.calls import AsyncDriven, Call, Op, SyncDriven, given, many, one
from appforge.client.prompt_models import WebhookDeliveryInfo, WebhookInfo

# --- operations -------------------------------------------------------------------------


def _create_webhook(url: str, events: Sequence[str], secret: str) -> Op[WebhookInfo]:
    body = {"url": url, "events": list(events), "secret": secret}
    r = yield Call("POST", "/api/webhooks", json=body)
    return one(WebhookInfo, r)


def _list_webhooks() -> Op[list[WebhookInfo]]:
    r = yield Call("GET", "/api/webhooks")
    return many(WebhookInfo, r)


def _get_webhook(webhook_id: str) -> Op[WebhookInfo]:
    r = yield Call("GET", f"/api/webhooks/{webhook_id}")
    return one(WebhookInfo, r)


def _update_webhook(
    webhook_id: str,
    url: str | None,
    events: Sequence[str] | None,
    secret: str | None,
    active: bool | None,
) -> Op[WebhookInfo]:
    events_list = None if events is None else list(events)
    body = given(url=url, events=events_list, secret=secret, active=active)
    r = yield Call("PATCH", f"/api/webhooks/{webhook_id}", json=body)
    return one(WebhookInfo, r)


def _delete_webhook(webhook_id: str) -> Op[None]:
    yield Call("DELETE", f"/api/webhooks/{webhook_id}")


def _webhook_deliveries(webhook_id: str, limit: int) -> Op[list[WebhookDeliveryInfo]]:
    path = f"/api/webhooks/{webhook_id}/deliveries"
    r = yield Call("GET", path, params={"limit": limit})
    return many(WebhookDeliveryInfo, r)


# --- Client -----------------------------------------------------------------------------


class WebhookMethods(SyncDriven):
    """Webhooks on ``Client``."""

    def create_webhook(self, url: str, events: Sequence[str], secret: str) -> WebhookInfo:
        """Subscribe ``url`` to events; deliveries are signed with ``secret``."""
        return self._drive(_create_webhook(url, events, secret))

    def list_webhooks(self) -> list[WebhookInfo]:
        """The webhooks, oldest first."""
        return self._drive(_list_webhooks())

    def get_webhook(self, webhook_id: str) -> WebhookInfo:
        """One webhook (never its secret)."""
        return self._drive(_get_webhook(webhook_id))

    def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        secret: str | None = None,
        active: bool | None = None,
    ) -> WebhookInfo:
        """Change a webhook, or pause (``active=False``) and resume it; None is unchanged.

        Pausing skips the deliveries still queued; events of the pause are never sent.
        """
        return self._drive(_update_webhook(webhook_id, url, events, secret, active))

    def delete_webhook(self, webhook_id: str) -> None:
        """Delete a webhook and its delivery log."""
        return self._drive(_delete_webhook(webhook_id))

    def webhook_deliveries(self, webhook_id: str, limit: int = 100) -> list[WebhookDeliveryInfo]:
        """The delivery log of a webhook, newest first."""
        return self._drive(_webhook_deliveries(webhook_id, limit))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncWebhookMethods(AsyncDriven):
    """Webhooks on ``AsyncClient``."""

    async def create_webhook(self, url: str, events: Sequence[str], secret: str) -> WebhookInfo:
        """Subscribe ``url`` to events; deliveries are signed with ``secret``."""
        return await self._drive(_create_webhook(url, events, secret))

    async def list_webhooks(self) -> list[WebhookInfo]:
        """The webhooks, oldest first."""
        return await self._drive(_list_webhooks())

    async def get_webhook(self, webhook_id: str) -> WebhookInfo:
        """One webhook (never its secret)."""
        return await self._drive(_get_webhook(webhook_id))

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        secret: str | None = None,
        active: bool | None = None,
    ) -> WebhookInfo:
        """Change a webhook, or pause (``active=False``) and resume it; None is unchanged.

        Pausing skips the deliveries still queued; events of the pause are never sent.
        """
        return await self._drive(_update_webhook(webhook_id, url, events, secret, active))

    async def delete_webhook(self, webhook_id: str) -> None:
        """Delete a webhook and its delivery log."""
        return await self._drive(_delete_webhook(webhook_id))

    async def webhook_deliveries(
        self, webhook_id: str, limit: int = 100
    ) -> list[WebhookDeliveryInfo]:
        """The delivery log of a webhook, newest first."""
        return await self._drive(_webhook_deliveries(webhook_id, limit))
