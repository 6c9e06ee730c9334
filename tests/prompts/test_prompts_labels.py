"""Labels under concurrency, on the real databases: moves serialise per prompt."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from appforge.core.db import make_engine, migrate, session_factory, transaction
from prompts import labels, store
from prompts.store import VersionSpec
from prompts.tables import PromptLabel


@pytest.fixture
def factory(backend: str | None, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(backend or f"sqlite:///{tmp_path / 'p.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def _prompt_with_versions(factory: sessionmaker[Session], n: int) -> str:
    with transaction(factory) as db:
        uc = store.create_use_case(db, "uc", "")
        prompt = store.create_prompt(db, uc, "p", "", [], "tester")
        for i in range(n):
            spec = VersionSpec(type="text", template_text=f"v{i + 1} {{{{ x }}}}")
            store.create_version(db, prompt.id, spec, "tester")
        return prompt.id


def test_labels_concurrent_promotes_leave_one_label_and_an_exact_history(
    factory: sessionmaker[Session],
):
    pid = _prompt_with_versions(factory, 6)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def promote(number: int) -> None:
        try:
            start.wait()
            with transaction(factory) as db:
                labels.move(db, pid, "production", number, f"user{number}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(n,)) for n in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with factory() as db:
        rows = db.query(PromptLabel).filter_by(prompt_id=pid, label="production").all()
        assert len(rows) == 1
        moves = labels.history(db, pid)
        assert len(moves) == 6
        # Each move saw the one before it: the chain of versions is unbroken.
        assert moves[0].previous_version is None
        for before, after in zip(moves, moves[1:], strict=False):
            assert after.previous_version == before.version_number
        winner, _ = labels.resolve(db, pid, "production")
        assert winner.version_number == moves[-1].version_number


def test_versions_concurrent_creates_get_distinct_numbers(factory: sessionmaker[Session]):
    pid = _prompt_with_versions(factory, 0)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            start.wait()
            with transaction(factory) as db:
                store.create_version(db, pid, VersionSpec(type="text", template_text="x"), "t")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with factory() as db:
        assert sorted(v.version_number for v in store.versions_of(db, pid)) == [1, 2, 3, 4]


def test_labels_latest_is_the_newest_and_default_is_production(
    factory: sessionmaker[Session],
):
    pid = _prompt_with_versions(factory, 2)
    with transaction(factory) as db:
        assert labels.resolve(db, pid)[0].version_number == 2  # no production: latest
        labels.move(db, pid, "production", 1, "t")
    with transaction(factory) as db:
        assert labels.resolve(db, pid)[0].version_number == 1
        store.create_version(db, pid, VersionSpec(type="text", template_text="new"), "t")
    with factory() as db:
        assert labels.resolve(db, pid, "latest")[0].version_number == 3
        assert labels.resolve(db, pid, version=2) == (store.get_version(db, pid, 2), None)
