"""The server key: encrypts stored secrets and keys token hashes.

One secret, ``APPFORGE_SECRET_KEY``, or else the key file ``secret.key`` in the
home (32 random bytes, base64url, made 0600 on first start). Sub-keys are
derived from it with HKDF-SHA256, each for one purpose (``info``):

    appforge secrets v1      Fernet key (AES-128-CBC + HMAC-SHA256) of webhook
                             secrets and request-signing secrets at rest
    appforge token hash v1   HMAC-SHA256 key of API token hashes
    appforge fingerprint v1  a fingerprint stored in the database (table
                             ``server_key``), so a process started with another
                             key refuses to start instead of reading garbage

Stored ciphertexts look like ``fernet:<token>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from appforge.core.db import ServerKeyCheck, utcnow
from appforge.core.errors import AppforgeError
from appforge.core.modes import FILE_MODE, tighten
from appforge.core.settings import Settings

KEY_FILE = "secret.key"
MIN_KEY_CHARS = 32
ENCRYPTED_PREFIX = "fernet:"
# Token hash schemes (tokens.hash_scheme): keyed now, plain SHA-256 before 0008.
HMAC_SCHEME = "hmac-sha256"
LEGACY_SCHEME = "sha256"


class SecretKeyError(AppforgeError):
    """The server key is missing, malformed, or not the one the database was made with."""

    code = "SECRET_KEY_INVALID"
    status_code = 500


def _derive(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


class ServerKey:
    """The derived keys of one server key; never holds or shows the key itself."""

    def __init__(self, material: str, source: str) -> None:
        if len(material) < MIN_KEY_CHARS:
            raise SecretKeyError(
                f"the server key from {source} is too short ({len(material)} characters; "
                f"at least {MIN_KEY_CHARS})"
            )
        raw = material.encode()
        self.source = source
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(raw, b"appforge secrets v1")))
        self._token_key = _derive(raw, b"appforge token hash v1")
        check = _derive(raw, b"appforge fingerprint v1")
        self.fingerprint = hmac.new(check, b"appforge server key", hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"ServerKey(source={self.source!r}, fingerprint={self.fingerprint!r})"

    def hash_token(self, value: str) -> str:
        """The stored hash of an API token: HMAC-SHA256 with the token-hash key, hex."""
        return hmac.new(self._token_key, value.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def legacy_hash(value: str) -> str:
        """The unkeyed SHA-256 hash tokens made before migration 0008 are stored with."""
        return hashlib.sha256(value.encode()).hexdigest()

    def encrypt(self, plain: str) -> str:
        """``fernet:<token>``: the secret encrypted and authenticated with the server key."""
        return ENCRYPTED_PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, stored: str) -> str:
        """The secret in ``stored``; SecretKeyError if it was not encrypted with this key."""
        if not stored.startswith(ENCRYPTED_PREFIX):
            raise SecretKeyError("a stored secret is not encrypted (expected 'fernet:...')")
        try:
            return self._fernet.decrypt(stored[len(ENCRYPTED_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                f"a stored secret cannot be decrypted with the server key from {self.source}",
                code="SECRET_KEY_MISMATCH",
            ) from None


def load_key(settings: Settings) -> ServerKey:
    """``APPFORGE_SECRET_KEY`` if set, else the home's key file (made on first call)."""
    if settings.secret_key is not None:
        return ServerKey(settings.secret_key.get_secret_value(), "APPFORGE_SECRET_KEY")
    path = settings.home / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    tighten(path)
    try:
        material = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"cannot read the key file {path}: {exc}") from None
    return ServerKey(material, str(path))


def _create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` unless another process got there first.

    The key is written whole to a private temporary file, then hard-linked to
    ``path``: linking fails if ``path`` exists, so two processes starting at once
    agree on one key and no reader ever sees an empty or partial key file.
    """
    material = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, (material + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process made it; use theirs
    finally:
        tmp.unlink(missing_ok=True)


def check_key(engine: Engine, key: ServerKey) -> None:
    """Record the key's fingerprint in a new database; refuse a different key in an old one."""
    stored = stored_fingerprint(engine)
    if stored is None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(ServerKeyCheck).values(
                        id=1, fingerprint=key.fingerprint, created_at=utcnow()
                    )
                )
            return
        except IntegrityError:  # another process recorded one meanwhile
            stored = stored_fingerprint(engine)
    if stored != key.fingerprint:
        raise SecretKeyError(
            f"the server key from {key.source} (fingerprint {key.fingerprint}) is not the "
            f"key this database's secrets are encrypted with (fingerprint {stored}); start "
            "with the original APPFORGE_SECRET_KEY or key file",
            code="SECRET_KEY_MISMATCH",
        )


def stored_fingerprint(engine: Engine) -> str | None:
    """The fingerprint of the key this database was made with (None: not recorded yet)."""
    with engine.connect() as conn:
        return conn.scalar(select(ServerKeyCheck.fingerprint).where(ServerKeyCheck.id == 1))
