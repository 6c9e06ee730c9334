"""Rotating the server key: previous keys, ``appforge keys``, and backups across a rotation.

Real SQLite homes in temp dirs (and PostgreSQL through the ``backend`` fixture).
"""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import Engine

from api.auth import TokenSpec, authenticate, create_token
from api.tables import Token, Webhook
from appforge.cli import main
from appforge.core.db import session_factory, transaction
from appforge.core.home import open_database
from appforge.core.keys import (
    KEY_FILE,
    PREVIOUS_FILE,
    SecretKeyError,
    ServerKey,
    load_key,
    stored_fingerprint,
)
from appforge.core.settings import Settings
from providers.catalog import server_settings
from providers.tables import StoredProvider

OLD = "the-old-server-key-0123456789abcdefghij"
NEW = "the-new-server-key-0123456789abcdefghij"


@dataclass
class Seeded:
    token: str
    signed_token: str
    signing_secret: str
    raw: dict[str, str]  # "table.column" -> stored ciphertext


def _settings(home: Path, backend: str | None = None, **values: object) -> Settings:
    return Settings(home=home, database_url=backend, **values)  # type: ignore[arg-type]


def _env(settings: Settings, **more: str) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "APPFORGE_HOME": str(settings.home),
        "APPFORGE_DATABASE_URL": settings.database_url,
        "APPFORGE_SECRET_KEY": settings.secret_key and settings.secret_key.get_secret_value(),
        "APPFORGE_SECRET_KEY_PREVIOUS": None,
    }
    env.update(more)
    return env


def _keys(settings: Settings, *args: str, stdin: str | None = None, **env: str) -> Result:
    return CliRunner().invoke(
        main, ["keys", *args], env=_env(settings, **env), input=stdin, catch_exceptions=False
    )


def _raw(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        token = conn.scalar(select(Token.signing_secret).where(Token.signing_secret.is_not(None)))
        hook = conn.scalar(select(Webhook.secret))
        row = conn.execute(select(StoredProvider.api_key, StoredProvider.headers)).one()
    assert token and hook and row[0] and row[1]
    return {
        "tokens.signing_secret": token,
        "webhooks.secret": hook,
        "llm_providers.api_key": row[0],
        "llm_providers.headers": row[1],
    }


def _seed(settings: Settings) -> Seeded:
    """A plain token, a signed one, a webhook and a provider, stored with the home's key."""
    engine, key = open_database(settings)
    factory = session_factory(engine)
    with transaction(factory) as db:
        plain = create_token(db, TokenSpec(name="plain"), key)
        signed = create_token(db, TokenSpec(name="signed", require_signature=True), key)
        db.add(
            Webhook(
                id=str(uuid.uuid4()), url="http://127.0.0.1:9/h", events=["*"],
                secret=key.encrypt("webhook-secret-1"),
            )
        )  # fmt: skip
        db.add(
            StoredProvider(
                name="corp", base_url="http://127.0.0.1:9/v1", models=[],
                api_key=key.encrypt("sk-provider-key"),
                headers=key.encrypt(json.dumps({"X-Team": "blue"})),
            )
        )  # fmt: skip
        values = plain.value, signed.value, signed.signing_secret
    raw = _raw(engine)
    engine.dispose()
    assert values[2] is not None
    return Seeded(values[0], values[1], values[2], raw)


def _assert_readable(engine: Engine, key: ServerKey, seeded: Seeded) -> None:
    with session_factory(engine)() as db:
        hook = db.scalars(select(Webhook)).one()
        provider = db.get(StoredProvider, "corp")
    assert provider is not None
    assert key.decrypt(hook.secret) == "webhook-secret-1"
    config = server_settings(provider, key)
    assert config.api_key is not None and config.api_key.get_secret_value() == "sk-provider-key"
    assert config.headers == {"X-Team": "blue"}
    principal = authenticate(session_factory(engine), seeded.signed_token, key)
    assert principal is not None and principal.signing_secret == seeded.signing_secret


def _token_hash(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        found = conn.scalar(select(Token.token_hash).where(Token.name == name))
    assert found is not None
    return found


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_key_decrypts_and_hashes_with_previous_keys():
    old = ServerKey(OLD, "old")
    key = ServerKey(NEW, "new", [old, ServerKey(OLD, "again")])
    assert key.fingerprints == (key.fingerprint, old.fingerprint)  # duplicates dropped
    stored = old.encrypt("s3cret")
    assert key.decrypt(stored) == "s3cret" and key.key_index(stored) == 1
    rotated = key.rotate(stored)
    assert rotated != stored and key.key_index(rotated) == 0
    assert ServerKey(NEW, "alone").decrypt(rotated) == "s3cret"
    with pytest.raises(SecretKeyError, match="previous keys") as caught:
        ServerKey(NEW, "other", [ServerKey("x" * 40, "x")]).decrypt(stored)
    assert caught.value.code == "SECRET_KEY_MISMATCH"
    assert key.token_hashes("af_t") == [key.hash_token("af_t"), old.hash_token("af_t")]


def test_previous_keys_come_from_the_setting_and_the_file(tmp_path: Path):
    (tmp_path / PREVIOUS_FILE).write_text(OLD + "\n\n")
    third = "a-third-server-key-0123456789abcdefghij"
    key = load_key(
        _settings(tmp_path, secret_key=SecretStr(NEW), secret_key_previous=SecretStr(f" {third},"))
    )
    assert key.fingerprints == tuple(ServerKey(k, "k").fingerprint for k in (NEW, third, OLD))
    with pytest.raises(SecretKeyError, match=r"APPFORGE_SECRET_KEY_PREVIOUS \(key 1\)"):
        load_key(_settings(tmp_path, secret_key_previous=SecretStr("short")))


def test_keys_rotate_reencrypts_every_secret_and_tokens_move_to_the_new_key(
    tmp_path: Path, backend: str | None
):
    settings = _settings(tmp_path / "home", backend)
    seeded = _seed(settings)
    old_material = (settings.home / KEY_FILE).read_text().strip()
    old = ServerKey(old_material, "old")

    result = _keys(settings, "rotate")
    assert result.exit_code == 0, result.stderr
    assert "re-encrypted 4 secrets" in result.stdout
    for column in seeded.raw:
        assert f"{column}" in result.stdout
    assert "restart every appforge process" in result.stderr
    new_material = (settings.home / KEY_FILE).read_text().strip()
    assert new_material != old_material
    assert (settings.home / PREVIOUS_FILE).read_text().splitlines() == [old_material]
    assert _mode(settings.home / KEY_FILE) == _mode(settings.home / PREVIOUS_FILE) == 0o600
    assert sorted(p.name for p in settings.home.glob(".secret*")) == []  # no temp file left

    engine, key = open_database(settings)
    new = ServerKey(new_material, "new")
    assert key.fingerprint == new.fingerprint and key.fingerprints[1:] == (old.fingerprint,)
    assert stored_fingerprint(engine) == new.fingerprint
    raw = _raw(engine)
    for column, before in seeded.raw.items():
        assert raw[column] != before, column  # re-encrypted...
        assert new.key_index(raw[column]) == 0  # ...with the new key alone
    old_hash = _token_hash(engine, "plain")
    assert old_hash == old.hash_token(seeded.token)
    assert authenticate(session_factory(engine), seeded.token, key) is not None
    assert _token_hash(engine, "plain") == new.hash_token(seeded.token)  # upgraded on use
    _assert_readable(engine, key, seeded)
    engine.dispose()

    # The previous key dropped: everything re-encrypted or re-hashed still works.
    (settings.home / PREVIOUS_FILE).unlink()
    engine, key = open_database(settings)
    assert key.previous == ()
    _assert_readable(engine, key, seeded)
    assert authenticate(session_factory(engine), seeded.token, key) is not None
    engine.dispose()


def test_keys_rotate_refuses_bad_new_keys_and_changes_nothing(tmp_path: Path):
    settings = _settings(tmp_path / "home")
    seeded = _seed(settings)
    material = (settings.home / KEY_FILE).read_text()
    given = tmp_path / "new.key"
    cases = {
        "short-key": "too short",
        "a key with spaces in it 0123456789abcdef": "printable ASCII without spaces",
        "comma,key-0123456789abcdef0123456789": "without spaces or commas",
        material.strip(): "is the current key",
        "": "must be one line",
    }
    for text, message in cases.items():
        given.write_text(text + "\n")
        result = _keys(settings, "rotate", "--new-key-file", str(given))
        assert result.exit_code == 2, (text, result.stdout)
        assert result.stderr.startswith("error [SECRET_KEY_INVALID]: ")
        assert message in result.stderr and "nothing was changed" in result.stderr
        assert result.stdout == ""
    missing = _keys(settings, "rotate", "--new-key-file", str(tmp_path / "nope"))
    assert missing.exit_code == 1 and missing.stderr.startswith("error [FILE_ERROR]")
    assert (settings.home / KEY_FILE).read_text() == material
    assert not (settings.home / PREVIOUS_FILE).exists()
    engine, _ = open_database(settings)
    assert _raw(engine) == seeded.raw
    engine.dispose()


def test_keys_rotate_takes_a_given_key_from_stdin(tmp_path: Path):
    settings = _settings(tmp_path / "home")
    seeded = _seed(settings)
    result = _keys(settings, "rotate", "--new-key-file", "-", stdin=NEW + "\n")
    assert result.exit_code == 0, result.stderr
    assert (settings.home / KEY_FILE).read_text() == NEW + "\n"
    engine, key = open_database(_settings(tmp_path / "home"))
    assert key.fingerprint == ServerKey(NEW, "n").fingerprint
    _assert_readable(engine, key, seeded)
    engine.dispose()


def test_keys_refuse_a_secret_no_key_decrypts_before_writing_anything(tmp_path: Path):
    settings = _settings(tmp_path / "home")
    _seed(settings)
    engine, _ = open_database(settings)
    stray = ServerKey("some-unknown-key-0123456789abcdefghij", "stray").encrypt("x-secret")
    with transaction(session_factory(engine)) as db:
        db.add(Webhook(id="stray-hook", url="http://127.0.0.1:9/", events=["*"], secret=stray))
    before = _raw(engine)
    engine.dispose()
    material = (settings.home / KEY_FILE).read_text()

    result = _keys(settings, "rotate")
    assert result.exit_code == 1
    assert result.stderr.startswith("error [SECRET_KEY_MISMATCH]: ")
    assert "webhooks.secret of stray-hook" in result.stderr
    assert "nothing was changed" in result.stderr
    assert (settings.home / KEY_FILE).read_text() == material
    assert not (settings.home / PREVIOUS_FILE).exists()
    engine, _ = open_database(settings)
    assert _raw(engine) == before
    engine.dispose()
    status = _keys(settings, "status")
    assert status.exit_code == 0 and "stray-hook" in status.stdout


def test_environment_key_is_refused_then_reencrypted_with_previous_keys(
    tmp_path: Path, backend: str | None
):
    settings = _settings(tmp_path / "home", backend, secret_key=SecretStr(OLD))
    seeded = _seed(settings)
    refused = _keys(settings, "rotate")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error [SECRET_KEY_IN_ENVIRONMENT]: ")
    assert "APPFORGE_SECRET_KEY_PREVIOUS" in refused.stderr
    assert "keys reencrypt" in refused.stderr
    assert not (settings.home / KEY_FILE).exists()

    # The operator changes the key without the old one: refused, the database says why.
    wrong = _keys(settings, "status", APPFORGE_SECRET_KEY=NEW)
    assert wrong.exit_code == 1 and "SECRET_KEY_MISMATCH" in wrong.stderr
    env = {"APPFORGE_SECRET_KEY": NEW, "APPFORGE_SECRET_KEY_PREVIOUS": OLD}
    status = _keys(settings, "status", **env)
    assert status.exit_code == 0, status.stderr
    assert "webhooks.secret                 0         1" in status.stdout
    done = _keys(settings, "reencrypt", **env)
    assert done.exit_code == 0, done.stderr
    assert "re-encrypted 4 secrets" in done.stdout
    after = _keys(settings, "status", **env)
    assert "webhooks.secret                 1         0" in after.stdout
    assert "tokens not used since the database key was recorded: 2" in after.stdout
    both = _settings(
        tmp_path / "home", backend, secret_key=SecretStr(NEW), secret_key_previous=SecretStr(OLD)
    )
    engine, key = open_database(both)
    assert authenticate(session_factory(engine), seeded.signed_token, key) is not None
    engine.dispose()
    used = _keys(settings, "status", **env)
    assert "tokens not used since the database key was recorded: 1" in used.stdout

    new_only = _settings(tmp_path / "home", backend, secret_key=SecretStr(NEW))
    engine, key = open_database(new_only)  # the old key no longer needed to start
    with engine.connect() as conn:
        assert conn.scalar(select(Webhook.secret)) != seeded.raw["webhooks.secret"]
    _assert_readable(engine, key, seeded)
    # A token not used since the rotation needed the old key: gone with it.
    assert authenticate(session_factory(engine), seeded.token, key) is None
    engine.dispose()


def test_backup_made_before_a_rotation_restores_with_the_previous_key(
    tmp_path: Path, backend: str | None
):
    source = _settings(tmp_path / "a", secret_key=SecretStr(OLD))
    seeded = _seed(source)
    path = tmp_path / "backup.json"
    made = CliRunner().invoke(main, ["backup", "--json-path", str(path)], env=_env(source))
    assert made.exit_code == 0, made.stderr

    target = _settings(tmp_path / "b", backend, secret_key=SecretStr(NEW))
    open_database(target)[0].dispose()
    restore = ["restore", "--json-path", str(path), "--yes"]
    refused = CliRunner().invoke(main, restore, env=_env(target, APPFORGE_SECRET_KEY=NEW))
    assert refused.exit_code == 2 and "another server key" in refused.stderr
    assert "APPFORGE_SECRET_KEY_PREVIOUS" in refused.stderr

    env = _env(target, APPFORGE_SECRET_KEY=NEW, APPFORGE_SECRET_KEY_PREVIOUS=OLD)
    restored = CliRunner().invoke(main, restore, env=env, catch_exceptions=False)
    assert restored.exit_code == 0, restored.stderr
    with_previous = _settings(
        tmp_path / "b", backend, secret_key=SecretStr(NEW), secret_key_previous=SecretStr(OLD)
    )
    engine, key = open_database(with_previous)
    new = ServerKey(NEW, "new")
    raw = _raw(engine)
    assert all(new.key_index(value) == 0 for value in raw.values())  # re-encrypted on restore
    _assert_readable(engine, key, seeded)
    assert authenticate(session_factory(engine), seeded.token, key) is not None
    assert _token_hash(engine, "plain") == new.hash_token(seeded.token)
    engine.dispose()


def test_server_started_with_new_and_previous_keys_serves_old_tokens(
    make_client: Callable[..., object], tmp_path: Path
):
    settings = _settings(tmp_path / "home", secret_key=SecretStr(OLD))
    seeded = _seed(settings)
    rotated = settings.model_copy(
        update={"secret_key": SecretStr(NEW), "secret_key_previous": SecretStr(OLD)}
    )
    client = make_client(rotated)
    answer = client.get(  # type: ignore[attr-defined]
        "/api/apps", headers={"Authorization": f"Token {seeded.token}"}
    )
    assert answer.status_code == 200, answer.text
    engine, _ = open_database(rotated)
    assert _token_hash(engine, "plain") == ServerKey(NEW, "n").hash_token(seeded.token)
    engine.dispose()
