"""A stopped API releases what it opened: the embedded Chroma's files and threads.

A process that starts and stops the app many times (a test run, an embedding host)
ran out of descriptors before: every stop left Chroma's SQLite files, its epoll and
event descriptors and a socket open, about six a time.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from appforge.core.settings import Settings
from datasources.embedding import Embedder
from providers.local import LocalProvider
from tests.conftest import ADMIN_TOKEN, seed_home
from tests.datasources.support import wait_for_entry


def _open_paths() -> list[str]:
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed between listing and reading
            continue
    return paths


def test_stopping_the_api_closes_the_embedded_vector_store(
    settings: Settings,
    local_provider: LocalProvider,
    embedder: Embedder,
    migrated_sqlite: Path,
) -> None:
    seed_home(settings.home, migrated_sqlite)
    chroma = str(settings.home / "chroma")
    app = create_app(settings, providers={"local": local_provider}, embedder=embedder)
    with TestClient(app, headers={"Authorization": f"Token {ADMIN_TOKEN}"}) as client:
        r = client.post("/api/datasources", json={"name": "docs", "type": "text"})
        assert r.status_code == 201, r.text
        ds = r.json()["uuid"]
        body = {"entry_data": {"name": "k", "content": "Kettles have a three-year warranty."}}
        r = client.post(f"/api/datasources/{ds}/entries", json=body)
        assert r.status_code == 201, r.text
        assert wait_for_entry(client, ds, r.json()["uuid"])["status"] == "ready"
        r = client.post(f"/api/datasources/{ds}/search", json={"query": "warranty"})
        assert r.status_code == 200 and r.json()["results"], r.text
        assert any(path.startswith(chroma) for path in _open_paths())  # it was open
    assert [path for path in _open_paths() if path.startswith(chroma)] == []
