"""Issue 15, finding 10 replayed against real `appforge serve` processes: secrets at rest.

A home left by an older appforge (revision 0007: plain webhook and signing
secrets, unsalted SHA-256 token hashes, a world-readable database) is started
by today's server. Afterwards nothing in the home is readable by others, no
stored row or backup holds a secret in plain text, and every old token,
signature and webhook still works; a wrong key is a clear start-up error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from legacy_home import LegacySecrets, make_legacy_database
from server_process import ServerProcess
from waiting import poll_until

from appforge.cli import main
from appforge.core import signing

Start = Callable[[dict[str, str]], ServerProcess]


class Receiver:
    """A webhook receiver on 127.0.0.1 recording whether each signature is valid."""

    def __init__(self, secret: str) -> None:
        self.valid: list[bool] = []
        valid = self.valid

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Appforge-Timestamp"].encode()
                mac = hmac.new(secret.encode(), stamp + b"." + body, hashlib.sha256)
                valid.append(
                    hmac.compare_digest(
                        "sha256=" + mac.hexdigest(), self.headers["X-Appforge-Signature"]
                    )
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(LegacySecrets().webhook_secret)
    yield r
    r.close()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The widest umask, inherited by the server and CLI processes started here."""
    old = os.umask(0)
    yield
    os.umask(old)


def _legacy_home(tmp_path: Path, receiver: Receiver) -> tuple[Path, LegacySecrets]:
    home = tmp_path / "home"
    home.mkdir()
    legacy = make_legacy_database(f"sqlite:///{home / 'appforge.db'}", receiver.url)
    for path in (home, home / "appforge.db"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)  # as the umask left them
    return home, legacy


def _env(home: Path, legacy: LegacySecrets) -> dict[str, str]:
    return {
        "APPFORGE_HOME": str(home),
        "APPFORGE_ADMIN_TOKEN": legacy.admin_token,
        "APPFORGE_DATASOURCES__URL_ALLOWLIST": '["127.0.0.1"]',
        "APPFORGE_WEBHOOKS__POLL_SECONDS": "0.1",
    }


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _signed_get(base: str, token: str, secret: str, path: str) -> httpx.Response:
    stamp = signing.timestamp_now()
    headers = {
        "Authorization": f"Token {token}",
        signing.TIMESTAMP_HEADER: stamp,
        signing.SIGNATURE_HEADER: signing.sign(secret, token, stamp, "GET", path, b""),
    }
    return httpx.get(base + path, headers=headers, timeout=30)


def _raw_secrets(home: Path) -> list[str]:
    """Every stored secret column, read with sqlite3 itself (not through appforge)."""
    with sqlite3.connect(home / "appforge.db") as conn:
        rows = conn.execute(
            "SELECT token_hash, signing_secret FROM tokens UNION ALL "
            "SELECT secret, NULL FROM webhooks"
        ).fetchall()
    conn.close()
    return [value for row in rows for value in row if value is not None]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``appforge *args`` with ``env`` set: the command's main, in this process (a child
    process would only add its start-up); its exit code, stdout and stderr apart."""
    result = CliRunner(env=env).invoke(main, list(args))
    # Every end is the command's own (an exit code), never an exception escaping it.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _old_credentials_work(base: str, legacy: LegacySecrets, receiver: Receiver) -> None:
    """The admin, editor and signed tokens authenticate; the old webhook delivers,
    signed with its original secret."""
    admin = {"Authorization": f"Token {legacy.admin_token}"}
    assert httpx.get(f"{base}/api/tokens/me", headers=admin, timeout=30).status_code == 200
    editor = httpx.get(
        f"{base}/api/tokens/me", headers={"X-API-Key": legacy.editor_token}, timeout=30
    )
    assert editor.status_code == 200 and editor.json()["id"] == "t-editor"
    signed = _signed_get(base, legacy.signed_token, legacy.signing_secret, "/api/tokens/me")
    assert signed.status_code == 200, signed.text
    forged = _signed_get(base, legacy.signed_token, "afs_guess", "/api/tokens/me")
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "SIGNATURE_INVALID"
    uc = httpx.post(f"{base}/api/v1/use-cases", json={"name": "S"}, headers=admin, timeout=30)
    made = httpx.post(
        f"{base}/api/v1/use-cases/{uc.json()['id']}/prompts",
        json={"name": "p"},
        headers=admin,
        timeout=30,
    )
    assert made.status_code == 201, made.text
    assert poll_until(lambda: receiver.valid) == [True]


def _new_secrets(base: str, legacy: LegacySecrets, receiver: Receiver) -> list[str]:
    """Make a webhook and a signed token now; their plain secrets (and the token's
    unkeyed hash), after checking the new token signs requests."""
    admin = {"Authorization": f"Token {legacy.admin_token}"}
    hook = httpx.post(
        f"{base}/api/webhooks",
        json={"url": receiver.url, "events": ["app.updated"], "secret": "new-hook-secret-1"},
        headers=admin,
        timeout=30,
    )
    assert hook.status_code == 201, hook.text
    new = httpx.post(
        f"{base}/api/tokens",
        json={"name": "new", "require_signature": True},
        headers=admin,
        timeout=30,
    ).json()
    ok = _signed_get(base, new["token"], new["signing_secret"], "/api/tokens/me")
    assert ok.status_code == 200
    unkeyed = hashlib.sha256(new["token"].encode()).hexdigest()
    return ["new-hook-secret-1", new["signing_secret"], unkeyed]


def test_legacy_home_is_private_encrypted_and_keeps_working(
    start_server: Start, tmp_path: Path, receiver: Receiver, open_umask: None
):
    home, legacy = _legacy_home(tmp_path, receiver)
    server = start_server(_env(home, legacy))
    _old_credentials_work(server.base, legacy, receiver)
    plain = [*legacy.plain(), *_new_secrets(server.base, legacy, receiver)]
    stored = _raw_secrets(home)
    assert not any(p in s for s in stored for p in plain)

    # Files: the home 0700; the database, its WAL files and the key file 0600.
    assert _mode(home) == 0o700
    for name in ("appforge.db", "appforge.db-wal", "appforge.db-shm", "secret.key"):
        assert _mode(home / name) == 0o600, name

    # A backup (written while the server runs) is 0600 and carries no plain secret.
    backup = tmp_path / "backup.json"
    made_backup = _cli(_env(home, legacy), "backup", "--json_path", str(backup))
    assert made_backup.returncode == 0, made_backup.stderr
    assert _mode(backup) == 0o600
    text = backup.read_text()
    assert "fernet:" in text and not [p for p in plain if p in text]
    server.stop()
    # With the server stopped (WAL checkpointed), not even the file's bytes hold them.
    raw = (home / "appforge.db").read_bytes()
    assert not [p for p in plain if p.encode() in raw]


def test_backup_restores_with_the_same_key_and_refuses_another(
    start_server: Start, tmp_path: Path, receiver: Receiver
):
    home, legacy = _legacy_home(tmp_path, receiver)
    env = _env(home, legacy)
    first = start_server(env)
    first.stop()
    backup = tmp_path / "backup.json"
    assert _cli(env, "backup", "--json_path", str(backup)).returncode == 0

    other = {**_env(tmp_path / "other", legacy), "APPFORGE_SECRET_KEY": "z" * 40}
    refused = _cli(other, "restore", "--json_path", str(backup), "--yes")
    assert refused.returncode == 2
    assert "BACKUP_INVALID" in refused.stderr and "another server key" in refused.stderr
    assert refused.stdout == ""

    key = (home / "secret.key").read_text().strip()
    same = {**_env(tmp_path / "same", legacy), "APPFORGE_SECRET_KEY": key}
    restored = _cli(same, "restore", "--json_path", str(backup), "--yes")
    assert restored.returncode == 0, restored.stderr
    server = start_server(same)
    signed = _signed_get(server.base, legacy.signed_token, legacy.signing_secret, "/api/tokens/me")
    assert signed.status_code == 200, signed.text
    editor = httpx.get(
        f"{server.base}/api/tokens/me", headers={"X-API-Key": legacy.editor_token}, timeout=30
    )
    assert editor.status_code == 200


def test_wrong_key_is_a_clear_start_up_error(start_server: Start, tmp_path: Path):
    home = tmp_path / "home"
    env = {"APPFORGE_HOME": str(home), "APPFORGE_ADMIN_TOKEN": "af_admin_for_key_test_0000"}
    start_server(env).stop()
    wrong = {**env, "APPFORGE_SECRET_KEY": "a-key-this-home-was-never-made-with-000"}
    with pytest.raises(RuntimeError) as caught:
        start_server(wrong)
    message = str(caught.value)
    assert "error [SECRET_KEY_MISMATCH]" in message and "Traceback" not in message
    started = _cli(wrong, "token", "list")
    assert started.returncode == 1 and "SECRET_KEY_MISMATCH" in started.stderr
    listing = _cli(env, "token", "list")  # the right key still opens it
    assert listing.returncode == 0, listing.stderr
    assert "admin" in listing.stdout
