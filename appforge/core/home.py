"""Opening the home: its private folder, the server key, and the migrated database.

Every entry point that touches the database (the API, ``appforge run``, the
CLI's commands) goes through :func:`open_database`, so each of them gets the
same modes, the same key and the same refusal of a wrong key.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from appforge.core.db import make_engine, migrate
from appforge.core.keys import ServerKey, check_key, load_key
from appforge.core.modes import private_dir, tighten, touch_private
from appforge.core.settings import Settings

DATABASE_FILE = "appforge.db"


def open_database(settings: Settings) -> tuple[Engine, ServerKey]:
    """The migrated engine and the server key; raises SecretKeyError for a wrong key.

    The home is made 0700, a new SQLite database file 0600 before SQLite opens it
    (its ``-wal`` and ``-shm`` files inherit that mode), and everything already in
    the home is tightened to 0600/0700.
    """
    private_dir(settings.home)
    key = load_key(settings)
    if not settings.database_url:
        touch_private(settings.home / DATABASE_FILE)
    engine = make_engine(settings.resolved_database_url(), settings.postgres)
    try:
        migrate(engine, key)
        check_key(engine, key)
    except BaseException:
        engine.dispose()
        raise
    tighten(settings.home)
    return engine, key
