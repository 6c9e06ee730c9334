"""``APPFORGE_ADMIN_TOKEN`` when several processes start at once on a new database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

from api.auth import ensure_admin_token
from api.tables import Token
from appforge.core.db import make_engine, migrate, session_factory
from appforge.core.keys import ServerKey

VALUE = "af_started_twice_0123456789"


def test_admin_token_made_by_another_process_meanwhile_is_kept(tmp_path: Path):
    """Between this process's look (no token yet) and its insert, another process
    stores the token: the insert breaks the unique hash, and start-up goes on with the
    other's row instead of failing."""
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    migrate(engine)
    factory = session_factory(engine)
    key = ServerKey("k" * 40, "test")
    raced: list[bool] = []

    def other_process_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO tokens") and not raced:
            raced.append(True)  # once: the other process's own insert goes through
            ensure_admin_token(factory, VALUE, "admin", key)

    event.listen(engine, "before_cursor_execute", other_process_first)
    try:
        ensure_admin_token(factory, VALUE, "admin", key)
    finally:
        event.remove(engine, "before_cursor_execute", other_process_first)
    assert raced == [True]
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Token)) == 1
        assert db.scalar(select(Token.role)) == "admin"
    engine.dispose()
