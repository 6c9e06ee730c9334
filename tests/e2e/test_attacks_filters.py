"""Issue 15, findings 1 and 9 (last part), replayed against a real `appforge serve`:

1. A search filter of 10,000 `$or` clauses segfaulted Chroma's bindings and took
   the whole API down; 1,000 clauses answered 500, a 100,000-value `$in` 500
   after 16 s; a public app passing its input into `where` let anyone do it.
9. A random `X-API-Key` per request was 401 forever, never rate-limited.

Throughout, `/api/health` answers 200, and the process is alive after.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from health_watch import health_throughout
from hostile_docs import templated_filter_app
from server_process import ServerProcess
from waiting import poll_until

TOKEN = "af_attack_filters_admin_token_0123"
NOBODY = {"Authorization": ""}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home: Path = tmp_path_factory.mktemp("home")
    process = ServerProcess(
        {
            "APPFORGE_HOME": str(home),
            "APPFORGE_ADMIN_TOKEN": TOKEN,
            "APPFORGE_RATE_LIMIT__AUTH_FAILURES": "5/minute",
        }
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Token {TOKEN}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def datasource(api: httpx.Client) -> str:
    """A datasource with one ready entry (the embedding model loaded before watching)."""
    ds = api.post("/api/datasources", json={"name": "langs", "type": "text"}).json()["uuid"]
    entry = {"entry_data": {"name": "a", "content": "Hello."}, "entry_metadata": {"lang": "en"}}
    assert api.post(f"/api/datasources/{ds}/entries", json=entry).status_code == 201

    def ready() -> bool:
        return bool(api.get(f"/api/datasources/{ds}/entries").json()[0]["status"] == "ready")

    poll_until(ready, timeout=600)
    return str(ds)


def test_attack_huge_filters_are_refused_and_the_server_lives(
    server: ServerProcess, api: httpx.Client, datasource: str
):
    search = f"/api/datasources/{datasource}/search"
    attacks = [
        {"$or": [{"md_lang": f"l{i}"} for i in range(10_000)]},
        {"$or": [{"md_lang": f"l{i}"} for i in range(1_000)]},
        {"md_lang": {"$in": list(range(100_000))}},
    ]
    with health_throughout(server.base):
        for where in attacks:
            r = api.post(search, json={"query": "hello", "where": where})
            assert r.status_code == 422, r.text[:300]
            assert r.json()["error"]["code"] == "FILTER_INVALID"
        fine = api.post(search, json={"query": "hello", "where": {"md_lang": "en"}})
        assert fine.status_code == 200 and len(fine.json()["results"]) == 1
    assert server.proc.poll() is None


def test_attack_public_app_cannot_smuggle_a_huge_filter(
    server: ServerProcess, api: httpx.Client, datasource: str
):
    app = templated_filter_app(datasource)
    made = api.post("/api/apps", content=app, headers={"Content-Type": "application/yaml"})
    assert made.status_code == 201, made.text
    url = f"{server.base}/api/apps/{made.json()['uuid']}/run"
    huge = [{"md_lang": f"l{i}"} for i in range(10_000)]
    with health_throughout(server.base), httpx.Client(timeout=120) as stranger:
        r = stranger.post(url, json={"input": {"langs": huge}}, headers=NOBODY)
        assert r.status_code == 422 and r.json()["error"]["code"] == "FILTER_INVALID"
        small = stranger.post(url, json={"input": {"langs": [{"md_lang": "en"}]}})
        assert small.status_code == 200, small.text
    assert server.proc.poll() is None


def test_attack_random_keys_are_rate_limited_per_address(server: ServerProcess):
    with httpx.Client(base_url=server.base, timeout=30) as stranger:
        codes = [
            stranger.get("/api/apps", headers={"X-API-Key": f"af_guess_{n:04d}"}).status_code
            for n in range(8)
        ]
        assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
        refused = stranger.get("/api/apps", headers={"X-API-Key": "af_guess_more"})
        assert int(refused.headers["retry-after"]) > 0
        # Even the right key is refused from this address until the bucket refills:
        # guessing cannot go on behind a valid request.
        right = stranger.get("/api/apps", headers={"Authorization": f"Token {TOKEN}"})
        assert right.status_code == 429
