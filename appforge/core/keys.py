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

Rotation: keys used before, from ``APPFORGE_SECRET_KEY_PREVIOUS`` (comma-separated)
and the file ``secret.previous`` in the home (one a line), stay readable: secrets
decrypt with the current key or any previous one (``MultiFernet``, current
first), token hashes match under any of them (``api.auth`` stores the current
one on first use), and the database's recorded fingerprint may be a previous
key's until ``appforge keys rotate`` / ``reencrypt`` (``appforge.key_rotation``)
has re-encrypted everything under the current key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from appforge.core.db import ServerKeyCheck, utcnow
from appforge.core.errors import AppforgeError
from appforge.core.modes import FILE_MODE, tighten, write_private
from appforge.core.settings import Settings

KEY_FILE = "secret.key"
PREVIOUS_FILE = "secret.previous"
PREVIOUS_SETTING = "APPFORGE_SECRET_KEY_PREVIOUS"
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
    """The derived keys of one server key, and of the keys it replaced (``previous``);
    never holds or shows any key itself."""

    def __init__(self, material: str, source: str, previous: Sequence[ServerKey] = ()) -> None:
        if len(material) < MIN_KEY_CHARS:
            raise SecretKeyError(
                f"the server key from {source} is too short ({len(material)} characters; "
                f"at least {MIN_KEY_CHARS})"
            )
        raw = material.encode()
        self.source = source
        self._own = Fernet(base64.urlsafe_b64encode(_derive(raw, b"appforge secrets v1")))
        self._token_key = _derive(raw, b"appforge token hash v1")
        self._client_key = _derive(raw, b"appforge client hash v1")
        check = _derive(raw, b"appforge fingerprint v1")
        self.fingerprint = hmac.new(check, b"appforge server key", hashlib.sha256).hexdigest()[:32]
        # Only the previous keys' own parts are used, not their own previous keys.
        self.previous = tuple(p for p in _unique(previous) if p.fingerprint != self.fingerprint)
        self._fernet = MultiFernet([self._own, *(p._own for p in self.previous)])

    def __repr__(self) -> str:
        return f"ServerKey(source={self.source!r}, fingerprint={self.fingerprint!r})"

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """The current key's fingerprint, then the previous keys'."""
        return (self.fingerprint, *(p.fingerprint for p in self.previous))

    def hash_token(self, value: str) -> str:
        """The stored hash of an API token: HMAC-SHA256 with the token-hash key, hex."""
        return hmac.new(self._token_key, value.encode(), hashlib.sha256).hexdigest()

    def hash_client(self, address: str) -> str:
        """How a run records the address of a caller without a token: HMAC-SHA256 with
        a key of its own, 32 hex digits (the address cannot be read back from it)."""
        return hmac.new(self._client_key, address.encode(), hashlib.sha256).hexdigest()[:32]

    def token_hashes(self, value: str) -> list[str]:
        """The token's hash under the current key, then under each previous key."""
        return [self.hash_token(value), *(p.hash_token(value) for p in self.previous)]

    @staticmethod
    def legacy_hash(value: str) -> str:
        """The unkeyed SHA-256 hash tokens made before migration 0008 are stored with."""
        return hashlib.sha256(value.encode()).hexdigest()

    def encrypt(self, plain: str) -> str:
        """``fernet:<token>``: the secret encrypted and authenticated with the server key."""
        return ENCRYPTED_PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, stored: str) -> str:
        """The secret in ``stored``; SecretKeyError if no key (current or previous) made it."""
        try:
            return self._fernet.decrypt(self._token(stored)).decode()
        except InvalidToken:
            raise self._mismatch() from None

    def rotate(self, stored: str) -> str:
        """``stored`` encrypted again with the current key (its timestamp kept)."""
        try:
            return ENCRYPTED_PREFIX + self._fernet.rotate(self._token(stored)).decode()
        except InvalidToken:
            raise self._mismatch() from None

    def key_index(self, stored: str) -> int | None:
        """Which key decrypts ``stored``: 0 the current one, 1.. a previous one, None none."""
        token = self._token(stored)
        for index, key in enumerate((self, *self.previous)):
            try:
                key._own.decrypt(token)
            except InvalidToken:
                continue
            return index
        return None

    @staticmethod
    def _token(stored: str) -> bytes:
        if not stored.startswith(ENCRYPTED_PREFIX):
            raise SecretKeyError("a stored secret is not encrypted (expected 'fernet:...')")
        return stored[len(ENCRYPTED_PREFIX) :].encode()

    def _mismatch(self) -> SecretKeyError:
        also = f" or any of {len(self.previous)} previous keys" if self.previous else ""
        return SecretKeyError(
            f"a stored secret cannot be decrypted with the server key from {self.source}{also}",
            code="SECRET_KEY_MISMATCH",
        )


def _unique(keys: Sequence[ServerKey]) -> list[ServerKey]:
    found: dict[str, ServerKey] = {}
    for key in keys:
        found.setdefault(key.fingerprint, key)
    return list(found.values())


def load_key(settings: Settings) -> ServerKey:
    """``APPFORGE_SECRET_KEY`` if set, else the home's key file (made on first call),
    with the previous keys of :func:`previous_materials`."""
    previous = [ServerKey(m, source) for m, source in previous_materials(settings)]
    if settings.secret_key is not None:
        return ServerKey(settings.secret_key.get_secret_value(), "APPFORGE_SECRET_KEY", previous)
    path = settings.home / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    return ServerKey(read_key_file(path), str(path), previous)


def read_key_file(path: Path) -> str:
    """The key in a key file (made 0600 if it was not)."""
    tighten(path)
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"cannot read the key file {path}: {exc}") from None


def previous_materials(settings: Settings) -> list[tuple[str, str]]:
    """(key, where it comes from) of each previous key: ``APPFORGE_SECRET_KEY_PREVIOUS``
    (comma-separated), then the lines of ``secret.previous`` in the home."""
    found: list[tuple[str, str]] = []
    if settings.secret_key_previous is not None:
        pieces = settings.secret_key_previous.get_secret_value().split(",")
        found += [
            (piece.strip(), f"{PREVIOUS_SETTING} (key {i})")
            for i, piece in enumerate(pieces, 1)
            if piece.strip()
        ]
    path = settings.home / PREVIOUS_FILE
    if path.exists():
        lines = read_key_file(path).splitlines()
        found += [(line.strip(), f"{path} (line {i})") for i, line in enumerate(lines, 1)]
        found = [(m, source) for m, source in found if m]
    return found


def new_material() -> str:
    """A new random server key: 32 bytes, base64url."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` unless another process got there first.

    The key is written whole to a private temporary file, then hard-linked to
    ``path``: linking fails if ``path`` exists, so two processes starting at once
    agree on one key and no reader ever sees an empty or partial key file.
    """
    material = new_material()
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
    """Record the key's fingerprint in a new database; refuse a different key in an old one.

    The recorded key may also be one of the previous keys: secrets not re-encrypted
    yet still decrypt with it."""
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
    if stored not in key.fingerprints:
        raise SecretKeyError(
            f"the server key from {key.source} (fingerprint {key.fingerprint}) is not the "
            f"key this database's secrets are encrypted with (fingerprint {stored}); start "
            "with the original APPFORGE_SECRET_KEY or key file (after a rotation: with "
            f"the old key among the previous keys, {PREVIOUS_SETTING} or {PREVIOUS_FILE})",
            code="SECRET_KEY_MISMATCH",
        )


def stored_fingerprint(engine: Engine) -> str | None:
    """The fingerprint of the key this database was made with (None: not recorded yet)."""
    with engine.connect() as conn:
        return conn.scalar(select(ServerKeyCheck.fingerprint).where(ServerKeyCheck.id == 1))


def record_fingerprint(conn: Connection, key: ServerKey) -> None:
    """Record ``key`` as the one every secret of the database is now encrypted with."""
    values = {"fingerprint": key.fingerprint, "created_at": utcnow()}
    done = conn.execute(update(ServerKeyCheck).where(ServerKeyCheck.id == 1).values(**values))
    if not done.rowcount:
        conn.execute(insert(ServerKeyCheck).values(id=1, **values))


def recorded_at(engine: Engine) -> tuple[str, datetime] | None:
    """(fingerprint, when it was recorded) of the database's key; None: not recorded."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ServerKeyCheck.fingerprint, ServerKeyCheck.created_at).where(
                ServerKeyCheck.id == 1
            )
        ).first()
    return None if row is None else (row[0], row[1])


def replace_key_file(settings: Settings, material: str) -> None:
    """Make ``material`` the home's key file and the replaced key the first line of
    ``secret.previous``: that file is written first (each atomically, 0600), so at
    no moment is the old key in neither file."""
    path, previous = settings.home / KEY_FILE, settings.home / PREVIOUS_FILE
    old = read_key_file(path)
    kept = read_key_file(previous).splitlines() if previous.exists() else []
    lines = [old, *(k.strip() for k in kept if k.strip() and k.strip() not in (old, material))]
    write_private(previous, ("\n".join(lines) + "\n").encode("ascii"))
    write_private(path, (material + "\n").encode("ascii"))
