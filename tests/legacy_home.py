"""A database as appforge left it before secrets at rest (revision 0007).

Webhook and request-signing secrets in plain text, token hashes plain SHA-256:
what migration 0008 and the keyed hashes must take over without breaking a
token, a signature or a webhook.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from alembic import command
from sqlalchemy import text

from appforge.core.db import alembic_config, make_engine, utcnow


@dataclass(frozen=True)
class LegacySecrets:
    """The plain values stored in a legacy database."""

    admin_token: str = "af_legacy_admin_token_0123456789"
    editor_token: str = "af_legacy_editor_token_012345678"
    signed_token: str = "af_legacy_signed_token_012345678"
    signing_secret: str = "afs_legacy_signing_secret_0123456789abcdef"
    webhook_id: str = "00000000-0000-4000-8000-00000000cafe"
    webhook_secret: str = "legacy-webhook-secret-0123456789"

    def plain(self) -> list[str]:
        """Every secret that must never appear in a file again."""
        return [
            self.signing_secret,
            self.webhook_secret,
            *(hashlib.sha256(t.encode()).hexdigest() for t in self.tokens()),
        ]

    def tokens(self) -> list[str]:
        return [self.admin_token, self.editor_token, self.signed_token]


_TOKEN = text(
    "INSERT INTO tokens (id, name, token_hash, prefix, role, require_signature, "
    "signing_secret, created_at) VALUES (:id, :name, :hash, :prefix, :role, :signed, "
    ":secret, :now)"
)
_WEBHOOK = text(
    "INSERT INTO webhooks (id, url, events, secret, active, created_by, created_at) "
    "VALUES (:id, :url, :events, :secret, true, 'legacy', :now)"
)


def make_legacy_database(url: str, webhook_url: str) -> LegacySecrets:
    """Create the schema at revision 0007 in ``url`` and store plain secrets in it."""
    legacy = LegacySecrets()
    engine = make_engine(url)
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007")
    tokens = [
        ("t-admin", legacy.admin_token, "admin", None),
        ("t-editor", legacy.editor_token, "editor", None),
        ("t-signed", legacy.signed_token, "editor", legacy.signing_secret),
    ]
    with engine.begin() as conn:
        for token_id, value, role, secret in tokens:
            conn.execute(
                _TOKEN,
                {
                    "id": token_id, "name": token_id, "prefix": value[:10], "role": role,
                    "hash": hashlib.sha256(value.encode()).hexdigest(),
                    "signed": secret is not None, "secret": secret, "now": utcnow(),
                },
            )  # fmt: skip
        conn.execute(
            _WEBHOOK,
            {
                "id": legacy.webhook_id, "url": webhook_url, "events": '["prompt.created"]',
                "secret": legacy.webhook_secret, "now": utcnow(),
            },
        )  # fmt: skip
    engine.dispose()
    return legacy
