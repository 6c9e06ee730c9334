"""The stored model catalog as a process sees it: no query per run while nothing changed,
a change of this process at once, another process's within the cache time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import event
from sqlalchemy.engine import Engine

from appforge.core.db import session_factory, transaction
from appforge.core.home import open_database
from appforge.core.keys import ServerKey
from appforge.core.settings import OpenAISettings, Settings
from providers.catalog import ModelCatalog, catalog_changed
from providers.errors import ModelNotFoundError
from providers.openai_compat import OpenAICompatProvider
from providers.registry import ProviderRegistry
from providers.tables import StoredAlias, StoredProvider


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Engine, ServerKey, list[str]]]:
    engine, key = open_database(Settings(home=tmp_path / "home"))
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    yield engine, key, statements
    engine.dispose()


def _store(engine: Engine, key: ServerKey, name: str, url: str, alias: str | None) -> None:
    """What another process's API does: the rows and the version, in one transaction."""
    with transaction(session_factory(engine)) as db:
        db.add(StoredProvider(name=name, base_url=url, api_key=key.encrypt("sk-0123"), models=[]))
        if alias is not None:
            db.add(StoredAlias(name=alias, target=f"{name}:m"))
        db.execute(catalog_changed())


def test_catalog_costs_no_query_while_nothing_changed(
    opened: tuple[Engine, ServerKey, list[str]], tmp_path: Path
):
    engine, key, statements = opened
    clock = Clock()
    catalog = ModelCatalog(session_factory(engine), key, 5.0, clock=clock)
    registry = ProviderRegistry(Settings(home=tmp_path / "home"), catalog=catalog)
    assert registry.split("default") == ("local", "smollm2")
    first = len(statements)
    assert first >= 1
    for _ in range(50):
        registry.split("default")
    assert len(statements) == first  # from memory

    # Another process stores a provider and repoints "default": seen after the cache time.
    _store(engine, key, "remote", "http://127.0.0.1:9/v1", "default")
    seen = len(statements)
    assert registry.split("default") == ("local", "smollm2")
    assert len(statements) == seen
    clock.now += 5.0
    assert registry.split("default") == ("remote", "m")
    provider, model = registry.resolve("default")
    assert isinstance(provider, OpenAICompatProvider) and provider.has_key and model == "m"

    # Nothing changed since: after the cache time, one version query and no reload.
    clock.now += 5.0
    before = len(statements)
    registry.split("default")
    assert len(statements) == before + 1 and "model_catalog" in statements[-1]

    # A change made through this process applies at once (invalidate), and the
    # provider is built again for its new server.
    with transaction(session_factory(engine)) as db:
        row = db.get(StoredProvider, "remote")
        assert row is not None
        row.base_url = "http://127.0.0.1:10/v1"
        db.execute(catalog_changed())
    catalog.invalidate()
    rebuilt, _ = registry.resolve("default")
    assert rebuilt is not provider and isinstance(rebuilt, OpenAICompatProvider)
    assert rebuilt.server == "http://127.0.0.1:10"
    registry.close()


def test_environment_wins_and_unknown_stored_targets_fail_clearly(
    opened: tuple[Engine, ServerKey, list[str]], tmp_path: Path
):
    engine, key, _ = opened
    _store(engine, key, "shared", "http://stored.example/v1", "fast")
    settings = Settings(
        home=tmp_path / "home",
        models={"fast": "local:smollm2"},
        providers={"shared": OpenAISettings(base_url="http://env.example/v1")},
        openai=OpenAISettings(api_key=SecretStr("sk-x")),
    )
    registry = ProviderRegistry(settings, catalog=ModelCatalog(session_factory(engine), key, 0))
    view = registry.view()
    assert view.aliases["fast"] == "local:smollm2" and view.alias_sources["fast"] == "env"
    assert view.shadowed_aliases == {"fast"} and view.shadowed_servers == {"shared"}
    assert view.servers["shared"].base_url == "http://env.example/v1"
    assert "default" not in view.aliases  # APPFORGE_MODELS set: no built-in default
    with pytest.raises(ModelNotFoundError, match="default"):
        registry.split("default")
    registry.close()
