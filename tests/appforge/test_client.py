"""The Python client against the real API (TestClient transport, real model)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from appforge.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    InvalidRequestError,
    NotFoundError,
    ServerError,
    StreamError,
    stitch,
)
from appforge.core.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples"

APP = {
    "name": "Client test",
    "type": "chat",
    "input": {"q": {"type": "string", "required": True}, "d": {"type": "integer", "default": 1}},
    "steps": [
        {
            "id": "a",
            "kind": "llm",
            "prompt": {"user": "{{ input.q }}"},
            "history": 2,
            "params": {"temperature": 0, "seed": 1, "max_tokens": 12},
        }
    ],
    "output": {"a": "{{ a.text }}", "n": "{{ 10 // input.d }}"},
}


@pytest.fixture
def af(client: TestClient, admin_token: str) -> Client:
    return Client("http://testserver", admin_token, http=client)


def test_client_apps_lifecycle(af: Client):
    app = af.create_app(APP)
    assert app.name == "Client test" and app.version == 1
    from_file = af.create_app(EXAMPLES / "summarize.yaml")
    assert af.get_app_yaml(from_file.uuid) == (EXAMPLES / "summarize.yaml").read_text()
    assert {a.uuid for a in af.list_apps()} == {app.uuid, from_file.uuid}
    assert [a.uuid for a in af.list_apps(q="summ")] == [from_file.uuid]
    updated = af.update_app(app.uuid, {**APP, "name": "Renamed"})
    assert updated.version == 2
    assert [v.version for v in af.app_versions(app.uuid)] == [2, 1]
    assert af.restore_app_version(app.uuid, 1).name == "Client test"
    af.delete_app(app.uuid)
    with pytest.raises(NotFoundError) as info:
        af.get_app(app.uuid)
    assert info.value.code == "APP_NOT_FOUND" and info.value.request_id


def test_client_run_stream_and_session(af: Client):
    app = af.create_app(APP)
    first = af.run(app.uuid, {"q": "Hello"})
    assert first.run.status == "succeeded" and first.output["n"] == 10
    chunks = list(af.stream(app.uuid, {"q": "Hello"}))
    assert chunks[-1].done and chunks[-1].run is not None
    assert stitch(chunks[:-1]) == first.output  # same seed, same text
    sse = list(af.stream(app.uuid, {"q": "Hello"}, sse=True))
    assert stitch(sse[:-1]) == first.output
    again = list(af.stream(app.uuid, {"q": "Again"}, session_id=first.session_id))
    assert again[-1].session_id == first.session_id
    assert len(af.get_session(first.session_id).turns) == 2
    assert again[-1].run is not None
    record = af.get_run(again[-1].run.id)
    assert len(record.steps[0]["messages"]) == 3  # the first turn came back as history
    af.delete_session(first.session_id)
    with pytest.raises(NotFoundError):
        af.get_session(first.session_id)


def test_client_errors_are_typed(af: Client, client: TestClient):
    with pytest.raises(InvalidRequestError) as info:
        af.create_app("name: [")
    assert info.value.status == 422 and info.value.code == "YAML_INVALID"
    assert info.value.details["errors"][0]["line"] == 1
    app = af.create_app(APP)
    with pytest.raises(InvalidRequestError) as bad_input:
        af.run(app.uuid, {})
    assert bad_input.value.code == "INPUT_INVALID"
    with pytest.raises(StreamError) as broken:  # fails after the answer streamed
        list(af.stream(app.uuid, {"q": "x", "d": 0}))
    assert broken.value.code == "TEMPLATE_ERROR"
    with pytest.raises(ServerError) as failed:
        af.run(app.uuid, {"q": "x", "d": 0})
    assert (failed.value.status, failed.value.code) == (500, "TEMPLATE_ERROR")
    with pytest.raises(AuthenticationError) as auth:
        Client("http://testserver", "af_wrong", http=client).list_apps()
    assert auth.value.code == "TOKEN_INVALID"


def test_client_retries_after_429(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    admin_token: str,
):
    client = make_client(make_settings(rate_limit={"requests": 1, "window_seconds": 1, "burst": 1}))
    af = Client("http://testserver", admin_token, http=client, max_retries=3)
    assert af.list_apps() == []
    assert af.list_apps() == []  # 429 first, then retried after Retry-After
    impatient = Client("http://testserver", admin_token, http=client, max_retries=0)
    with pytest.raises(Exception) as info:
        impatient.list_apps()
        impatient.list_apps()
    assert getattr(info.value, "code", "") == "RATE_LIMITED"


def test_client_signs_requests(af: Client, client: TestClient):
    created = af.create_token("signer", signed=True)
    signed = Client(
        "http://testserver", created.token, http=client, signing_secret=created.signing_secret
    )
    assert signed.list_apps(q="x") == []
    assert signed.create_app(APP).name == "Client test"
    unsigned = Client("http://testserver", created.token, http=client)
    with pytest.raises(AuthenticationError) as info:
        unsigned.list_apps()
    assert info.value.code == "SIGNATURE_REQUIRED"


def test_async_client_runs_and_streams(client: TestClient, admin_token: str):
    async def go() -> tuple[Any, list[Any]]:
        transport = httpx.ASGITransport(app=client.app)
        async with AsyncClient(
            "http://testserver", admin_token, http=httpx.AsyncClient(transport=transport)
        ) as af:
            app = await af.create_app(APP)
            result = await af.run(app.uuid, {"q": "Hi"})
            chunks = [c async for c in af.stream(app.uuid, {"q": "Hi"})]
            return result, chunks

    result, chunks = asyncio.run(go())
    assert stitch(chunks[:-1]) == result.output


def test_client_datasources_entries_and_search(af: Client):
    ds = af.create_datasource("kb", "text", search_mode="keyword")
    assert ds.search_mode == "keyword"
    entry = af.add_entry(
        ds.uuid, "cats", content="Cats sleep sixteen hours a day.", metadata={"topic": "cats"}
    )
    af.add_entry(
        ds.uuid, "dogs", content="Dogs bark at the mail carrier.", metadata={"topic": "dogs"}
    )
    entries = af.wait_for_entries(ds.uuid, timeout=120)
    assert {e.status for e in entries} == {"ready"}
    assert af.get_entry(ds.uuid, entry.uuid).name == "cats"
    found = af.search(ds.uuid, "How long do cats sleep?", top_k=1, where={"md_topic": "cats"})
    hits = found.results
    assert len(hits) == 1
    assert hits[0].metadata["entry_uuid"] == entry.uuid
    by_keyword = af.search(ds.uuid, "mail carrier").results  # the datasource's mode
    assert [h.metadata["name"] for h in by_keyword] == ["dogs"]
    hybrid = af.search(ds.uuid, "sleeping cats", mode="hybrid", keyword_weight=0.2).results
    assert hybrid[0].metadata["name"] == "cats" and 0 < hybrid[0].score <= 1
    af.delete_entry(ds.uuid, entry.uuid)
    assert [e.name for e in af.list_entries(ds.uuid)] == ["dogs"]
    af.delete_datasource(ds.uuid)
    assert af.list_datasources() == []


def test_client_prompts_versions_labels_render(af: Client):
    uc = af.create_use_case("Support")
    prompt = af.create_prompt(uc.id, "greet")
    af.create_version(prompt.id, type="text", template_text="Hi {{ name }}!")
    af.create_version(prompt.id, type="text", template_text="Hello {{ name }}!")
    assert [v.version_number for v in af.list_versions(prompt.id)] == [2, 1]
    assert af.promote(prompt.id, 1, "production").labels == ["production"]
    assert af.render(prompt.id, {"name": "Ada"}).text == "Hi Ada!"
    deployed = af.deploy(prompt.id, "production", 2, "better greeting")
    assert (deployed.version, deployed.previousVersion) == (2, 1)
    assert af.render(prompt.id, {"name": "Ada"}, label="production").text == "Hello Ada!"
    assert af.render(prompt.id, {"name": "Bo"}, version=1).text == "Hi Bo!"
    changes = af.diff(prompt.id, 1, 2)
    assert (changes.from_version, changes.to_version) == (1, 2)
    assert changes.summary.modifications == 1 and "+Hello {{ name }}!" in changes.unified
    assert [d.version for d in af.deployments(prompt.id).deployments] == [2]
    with pytest.raises(InvalidRequestError) as info:
        af.render(prompt.id, {"nope": 1}, version=1)
    assert info.value.code == "VARIABLES_INVALID"


def test_client_sees_its_own_prompt_writes_at_once(af: Client):
    uc = af.create_use_case("Own writes")
    prompt = af.create_prompt(uc.id, "p")
    af.create_version(prompt.id, type="text", template_text="One {{ x }}")
    af.create_version(prompt.id, type="text", template_text="Two {{ x }}")
    af.promote(prompt.id, 1, "production")
    assert af.render(prompt.id, {"x": 1}).text == "One 1"
    af.promote(prompt.id, 2, "production")  # within the cache's TTL
    assert af.render(prompt.id, {"x": 1}).text == "Two 1"
    assert af.rollback(prompt.id, "production").version == 1
    assert af.render(prompt.id, {"x": 1}).text == "One 1"
    af.update_prompt(prompt.id, description="changed")
    assert af.get_prompt(prompt.id).description == "changed"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_client_prompt_cache_is_fresh_for_its_ttl_on_its_clock(
    client: TestClient, admin_token: str
):
    clock = Clock()
    af = Client("http://testserver", admin_token, http=client, prompt_cache_ttl=30, clock=clock)
    uc = af.create_use_case("Cached")
    prompt = af.create_prompt(uc.id, "p")
    af.create_version(prompt.id, type="text", template_text="One {{ x }}")
    af.create_version(prompt.id, type="text", template_text="Two {{ x }}")
    af.promote(prompt.id, 1, "production")
    assert af.render(prompt.id, {"x": 1}).text == "One 1"
    assert af.get_prompt(prompt.id).versions[1].labels == ["production"]
    # Someone else moves the label: this client does not see it while its answers are fresh.
    promote(client, admin_token, prompt.id, 2)
    clock.now += 29.9
    assert af.render(prompt.id, {"x": 1}).text == "One 1"
    assert af.get_prompt(prompt.id).versions[1].labels == ["production"]
    assert af.render(prompt.id, {"x": 2}).text == "Two 2"  # other variables: not cached
    clock.now += 0.1
    assert af.render(prompt.id, {"x": 1}).text == "Two 1"
    assert af.get_prompt(prompt.id).versions[0].labels == ["production"]
    # A TTL of 0 keeps nothing: every read asks the server.
    off = Client("http://testserver", admin_token, http=client, prompt_cache_ttl=0, clock=clock)
    assert off.render(prompt.id, {"x": 1}).text == "Two 1"
    promote(client, admin_token, prompt.id, 1)
    assert off.render(prompt.id, {"x": 1}).text == "One 1"


def promote(client: TestClient, token: str, prompt_id: str, version: int) -> None:
    """Move the production label past the client under test."""
    moved = client.post(
        f"/api/v1/prompts/{prompt_id}/versions/{version}/promote",
        json={"label": "production"},
        headers={"Authorization": f"Token {token}"},
    )
    assert moved.status_code == 200


def test_client_operations_take_name_as_a_keyword(af: Client):
    ds = af.create_datasource(name="kb", type="mixed")
    entry = af.add_entry(ds.uuid, name="cats", content="Cats purr.")
    assert entry.name == "cats"
    uploaded = af.upload_entry(ds.uuid, b"Dogs bark.", name="dogs", filename="dogs.txt")
    assert (uploaded.name, uploaded.type) == ("dogs", "file")
    assert af.create_use_case(name="Named").name == "Named"
