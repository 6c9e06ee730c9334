"""The server key and the home's file modes, on real files in temp dirs."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import text

from appforge.core.home import open_database
from appforge.core.keys import KEY_FILE, SecretKeyError, ServerKey, load_key
from appforge.core.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The widest umask: every mode must be set explicitly, not left to it."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_key_file_is_created_0600_once_and_reused(tmp_path: Path, open_umask: None):
    settings = Settings(home=tmp_path)
    first = load_key(settings)
    path = tmp_path / KEY_FILE
    content = path.read_bytes()
    assert _mode(path) == 0o600
    assert len(content.strip()) >= 43  # 32 random bytes, base64url
    second = load_key(settings)
    assert path.read_bytes() == content
    assert second.fingerprint == first.fingerprint
    assert second.encrypt("x") != "x" and first.decrypt(second.encrypt("x")) == "x"
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temp file left


def test_key_file_made_by_racing_processes_is_one_key(tmp_path: Path):
    settings = Settings(home=tmp_path)
    barrier = threading.Barrier(8)
    fingerprints: list[str] = []

    def load() -> None:
        barrier.wait(timeout=30)
        fingerprints.append(load_key(settings).fingerprint)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(fingerprints) == 8 and len(set(fingerprints)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]


def test_secret_key_setting_is_used_instead_of_a_file(tmp_path: Path):
    value = "an-operator-chosen-server-key-of-40-chars"
    key = load_key(Settings(home=tmp_path, secret_key=SecretStr(value)))
    assert not (tmp_path / KEY_FILE).exists()
    assert key.fingerprint == ServerKey(value, "again").fingerprint
    assert value not in repr(key)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(home=tmp_path, secret_key=SecretStr("short"))


def test_secrets_encrypted_with_one_key_do_not_decrypt_with_another():
    one = ServerKey("the-first-server-key-0123456789abcdef", "one")
    two = ServerKey("the-second-server-key-0123456789abcdef", "two")
    stored = one.encrypt("webhook-secret")
    assert stored.startswith("fernet:") and "webhook-secret" not in stored
    assert one.decrypt(stored) == "webhook-secret"
    with pytest.raises(SecretKeyError) as caught:
        two.decrypt(stored)
    assert caught.value.code == "SECRET_KEY_MISMATCH"
    assert one.hash_token("af_x") != two.hash_token("af_x") != ServerKey.legacy_hash("af_x")


def test_database_refuses_a_different_key_before_anything_runs(tmp_path: Path):
    engine, key = open_database(Settings(home=tmp_path))
    engine.dispose()
    other = Settings(home=tmp_path, secret_key=SecretStr("not-the-key-this-home-was-made-with"))
    with pytest.raises(SecretKeyError) as caught:
        open_database(other)
    assert caught.value.code == "SECRET_KEY_MISMATCH"
    assert key.fingerprint in caught.value.message and "APPFORGE_SECRET_KEY" in caught.value.message
    (tmp_path / KEY_FILE).unlink()  # a lost key file: a new key would read garbage
    with pytest.raises(SecretKeyError, match="fingerprint"):
        open_database(Settings(home=tmp_path))


def test_home_database_and_wal_files_are_private(tmp_path: Path, open_umask: None):
    home = tmp_path / "home"
    engine, _ = open_database(Settings(home=home))
    with engine.begin() as conn:  # a write: SQLite makes the -wal and -shm files
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
        conn.execute(text("INSERT INTO probe VALUES (1)"))
        files = sorted(p.name for p in home.iterdir())
        assert {"appforge.db", "appforge.db-wal", "appforge.db-shm", KEY_FILE} <= set(files)
        modes = {name: _mode(home / name) for name in files}
    engine.dispose()
    assert _mode(home) == 0o700
    assert set(modes.values()) == {0o600}, modes


def test_existing_home_is_tightened_on_start(tmp_path: Path):
    home = tmp_path / "home"
    (home / "files" / "ds").mkdir(parents=True)
    (home / "files" / "ds" / "entry").write_bytes(b"confidential")
    (home / "appforge.db").touch()
    for path, mode in [
        (home, 0o755),
        (home / "files", 0o755),
        (home / "files" / "ds", 0o777),
        (home / "files" / "ds" / "entry", 0o644),
        (home / "appforge.db", 0o644),
    ]:
        os.chmod(path, mode)
    engine, _ = open_database(Settings(home=home))
    engine.dispose()
    assert [_mode(p) for p in (home, home / "files", home / "files" / "ds")] == [0o700] * 3
    assert _mode(home / "files" / "ds" / "entry") == 0o600
    assert _mode(home / "appforge.db") == 0o600
