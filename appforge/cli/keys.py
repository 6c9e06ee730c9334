"""``appforge keys``: rotate the server key, re-encrypt stored secrets, show their state."""

from __future__ import annotations

import string
import sys
from pathlib import Path
from typing import Any

import click

from appforge.cli.root import fail, load_settings, main, open_home

_KEY_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation) - {","}


@main.group()
def keys() -> None:
    """Rotate the server key and re-encrypt stored secrets (works on the database
    directly; restart every appforge process afterwards)."""


@keys.command("rotate")
@click.option(
    "--new-key-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Read the new key from this file ('-': standard input) instead of making one.",
)
def keys_rotate(new_key_file: Path | None) -> None:
    """Replace the key file with a new key, keep the old one in secret.previous, and
    re-encrypt every stored secret with the new key."""
    from appforge.core.keys import KEY_FILE, PREVIOUS_FILE, load_key, new_material
    from appforge.core.keys import replace_key_file as replace

    settings = load_settings()
    if settings.secret_key is not None:
        fail(
            "SECRET_KEY_IN_ENVIRONMENT",
            "the server key comes from APPFORGE_SECRET_KEY, which this command cannot "
            "change: set APPFORGE_SECRET_KEY to the new key and add the old one to "
            "APPFORGE_SECRET_KEY_PREVIOUS (in every process), then run "
            "`appforge keys reencrypt`",
            status=2,
        )
    material = _read_key(new_key_file) if new_key_file is not None else new_material()
    engine, key = open_home(settings)
    try:
        _refuse_known(material, key)
        _refuse_unreadable(engine, key)
        replace(settings, material)
        rotated = load_key(settings)
        click.echo(
            f"new key in {settings.home / KEY_FILE}; the old one (fingerprint "
            f"{key.fingerprint}) kept in {settings.home / PREVIOUS_FILE}",
            err=True,
        )
        counts = _reencrypt(engine, rotated)
    finally:
        engine.dispose()
    _report(counts, rotated.fingerprint)


@keys.command("reencrypt")
def keys_reencrypt() -> None:
    """Re-encrypt every stored secret with the current key (after changing
    APPFORGE_SECRET_KEY, or to finish an interrupted rotation)."""
    engine, key = open_home()
    try:
        _refuse_unreadable(engine, key)
        counts = _reencrypt(engine, key)
    finally:
        engine.dispose()
    _report(counts, key.fingerprint)


@keys.command("status")
def keys_status() -> None:
    """Show the keys, and which key each stored secret is encrypted with."""
    from appforge.core.keys import recorded_at
    from appforge.key_rotation import scan, token_state

    engine, key = open_home()
    try:
        recorded = recorded_at(engine)
        columns = scan(engine, key)
        tokens = token_state(engine, recorded[1] if recorded else None)
    finally:
        engine.dispose()
    click.echo(f"current key   {key.fingerprint}  ({key.source})")
    for previous in key.previous:
        click.echo(f"previous key  {previous.fingerprint}  ({previous.source})")
    if recorded is not None:
        click.echo(f"database key  {recorded[0]}  (recorded {recorded[1]:%Y-%m-%d %H:%M:%S})")
    click.echo(f"{'COLUMN':24}  {'CURRENT':>7}  {'PREVIOUS':>8}  UNREADABLE")
    for state in columns:
        unreadable = ", ".join(state.unreadable) or "0"
        click.echo(f"{state.column:24}  {state.current:7}  {state.previous:8}  {unreadable}")
    click.echo(
        f"tokens not used since the database key was recorded: "
        f"{tokens.not_used_since_recorded} (their hashes may need a previous key until "
        f"first used); legacy token hashes: {tokens.legacy}"
    )


def _read_key(path: Path) -> str:
    """The one-line key in ``path`` (or standard input), checked before anything runs."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    material = text.strip()
    if not material or not set(material) <= _KEY_CHARS:
        fail(
            "SECRET_KEY_INVALID",
            f"the new key from {path} must be one line of printable ASCII without spaces "
            "or commas; nothing was changed",
            status=2,
        )
    return material


def _refuse_known(material: str, key: Any) -> None:
    from appforge.core.keys import SecretKeyError, ServerKey

    try:
        new = ServerKey(material, "the new key")
    except SecretKeyError as exc:
        fail(exc.code, f"{exc.message}; nothing was changed", status=2)
    if new.fingerprint in key.fingerprints:
        which = "current" if new.fingerprint == key.fingerprint else "a previous"
        fail("SECRET_KEY_INVALID", f"the new key is the {which} key; nothing was changed", 2)


def _refuse_unreadable(engine: Any, key: Any) -> None:
    """End the command, before anything is written, if a secret decrypts with no key."""
    from appforge.key_rotation import scan

    bad = [f"{s.column} of {', '.join(s.unreadable)}" for s in scan(engine, key) if s.unreadable]
    if bad:
        fail(
            "SECRET_KEY_MISMATCH",
            f"secrets no known key decrypts: {'; '.join(bad)} (add the key they were made "
            "with to APPFORGE_SECRET_KEY_PREVIOUS); nothing was changed",
        )


def _reencrypt(engine: Any, key: Any) -> dict[str, int]:
    from appforge.core.keys import SecretKeyError
    from appforge.key_rotation import reencrypt

    try:
        return reencrypt(engine, key)
    except SecretKeyError as exc:
        fail(exc.code, f"{exc.message}; run `appforge keys reencrypt` again once fixed")


def _report(counts: dict[str, int], fingerprint: str) -> None:
    total = sum(counts.values())
    click.echo(f"re-encrypted {total} secrets with the key {fingerprint}:")
    for column, count in counts.items():
        click.echo(f"  {column:24}  {count}")
    click.echo(
        "restart every appforge process (they read the key at start); keep the previous "
        "keys until `appforge keys status` shows no token left to re-hash",
        err=True,
    )
