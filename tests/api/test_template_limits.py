"""Templates and prompt schemas that would freeze or bloat the server: refused, stored failed.

Runs whose templates are too large or too slow end with a clear code and are
stored failed (or ``timeout``), their worker free for the next run; prompt
versions whose ``variables_schema`` refers outside itself, or has patterns a
linear-time engine cannot run, are refused at save time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from appforge.core.settings import Settings

APP = """\
version: 1
name: {name}
limits: {{timeout_seconds: {timeout}}}
input:
  q: {{type: string, default: hi}}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{user}"
    params: {{temperature: 0, max_tokens: 1}}
output:
  answer: "{{{{ answer.text }}}}"
  extra: "{extra}"
"""
NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def app_text(
    user: str = "{{ input.q }}", extra: str = "ok", timeout: float = 60, name: str = "T"
) -> str:
    return APP.format(name=name, user=user, extra=extra, timeout=timeout)


def failed_run(client: TestClient, app: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    r = client.post(f"/api/apps/{app['uuid']}/run", json={})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    run: dict[str, Any] = client.get(f"/api/runs/{err['details']['run_id']}").json()
    assert run["error"]["code"] == code
    return run


def test_template_size_bomb_fails_the_run_fast(client: TestClient, create: Callable[..., Any]):
    app = create(client, app_text(user="x{{ 'a' * 10**8 }}"))
    run = failed_run(client, app, 422, "TEMPLATE_TOO_LARGE")
    assert run["status"] == "failed"
    app = create(client, app_text(name="P", user="{{ (9 ** (9 ** 7)) > 1 }}"))
    assert failed_run(client, app, 422, "TEMPLATE_TOO_LARGE")["status"] == "failed"


def test_template_lipsum_is_gone(client: TestClient, create: Callable[..., Any]):
    r = client.post("/api/apps", content=app_text(user="{{ lipsum(100000) }}"), headers=_YAML)
    # lipsum reads as an unknown name now: the app is refused at save, nothing runs.
    assert r.status_code == 422, r.text


_YAML = {"Content-Type": "application/yaml"}


def test_template_output_too_large_is_stored_failed_and_small(
    make_client: Callable[[Settings], TestClient],
    make_settings: Callable[..., Settings],
    create: Callable[..., Any],
):
    client = make_client(make_settings(limits={"max_output_bytes": 2048}))
    app = create(client, app_text(extra="{{ 'x' * 3000 }}"))
    run = failed_run(client, app, 422, "OUTPUT_TOO_LARGE")
    assert run["status"] == "failed"
    assert len(str(run["output"])) < 2048


def test_template_run_timeout_ends_a_long_loop_and_frees_the_worker(
    make_client: Callable[[Settings], TestClient],
    make_settings: Callable[..., Settings],
    create: Callable[..., Any],
):
    client = make_client(make_settings(runs={"workers": 1}))
    slow = create(client, app_text(user=NESTED, timeout=1))
    started = time.monotonic()
    run = failed_run(client, slow, 504, "RUN_TIMEOUT")
    assert run["status"] == "timeout"
    # 10**10 loop iterations would take hours: the run's timeout ended them.
    assert time.monotonic() - started < 120
    fine = create(client, app_text(name="Fine"))
    r = client.post(f"/api/apps/{fine['uuid']}/run", json={})
    assert r.status_code == 200, r.text  # the only worker is free again


# --- prompt versions ----------------------------------------------------------------


def _prompt(client: TestClient) -> str:
    uc = client.post("/api/v1/use-cases", json={"name": "Sec"}).json()["id"]
    r = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "p"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _version(schema: dict[str, Any], template: str = "{{ name }}") -> dict[str, Any]:
    return {"type": "text", "template_text": template, "variables_schema": schema}


def test_prompt_schema_remote_and_file_refs_are_refused_at_save(client: TestClient, tmp_path: Path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "string", "description": "TOP-SECRET-CONTENT"}')
    pid = _prompt(client)
    for ref in (
        "http://127.0.0.1:9/x.json",
        "https://example.com/s.json#/a",
        secret.as_uri(),
        "other.json",
    ):
        schema = {"type": "object", "properties": {"name": {"$ref": ref}}}
        r = client.post(f"/api/v1/prompts/{pid}/versions", json=_version(schema))
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "SCHEMA_INVALID"
        assert ref in err["message"] and "properties/name/$ref" in err["message"]
        assert "TOP-SECRET" not in r.text
    assert client.get(f"/api/v1/prompts/{pid}/versions").json() == []  # nothing stored


def test_prompt_schema_local_refs_resolve_without_fetching(client: TestClient):
    pid = _prompt(client)
    schema = {
        "type": "object",
        "properties": {"name": {"$ref": "#/$defs/short"}},
        "$defs": {"short": {"type": "string", "maxLength": 3}},
    }
    r = client.post(f"/api/v1/prompts/{pid}/versions", json=_version(schema))
    assert r.status_code == 201, r.text
    url = f"/api/v1/prompts/{pid}/render"
    assert client.post(url, json={"variables": {"name": "abc"}}).json()["text"] == "abc"
    r = client.post(url, json={"variables": {"name": "abcd"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VARIABLES_INVALID"


def test_prompt_schema_patterns_run_in_linear_time(client: TestClient):
    pid = _prompt(client)
    for pattern in ("(a)\\1", "a(?=b)", "(?<!x)y"):
        schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": pattern}}}
        r = client.post(f"/api/v1/prompts/{pid}/versions", json=_version(schema))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "SCHEMA_INVALID"
        assert "pattern" in r.json()["error"]["message"]
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b+)+$": {"type": "string"}},
        "additionalProperties": False,
    }
    assert client.post(f"/api/v1/prompts/{pid}/versions", json=_version(schema)).status_code == 201
    evil = "a" * 26 + "!"
    started = time.monotonic()
    r = client.post(
        f"/api/v1/prompts/{pid}/render", json={"variables": {"name": evil, "b" * 26 + "!": "x"}}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "VARIABLES_INVALID"
    messages = [e["message"] for e in r.json()["error"]["details"]["errors"]]
    assert any("does not match" in m for m in messages)
    assert any("Additional properties" in m for m in messages)
    # A backtracking engine needs minutes for this (doubling per character).
    assert time.monotonic() - started < 30


def test_prompt_render_has_a_deadline(
    make_client: Callable[[Settings], TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(limits={"render_timeout_seconds": 0.5}))
    pid = _prompt(client)
    body = {"type": "text", "template_text": NESTED + "{{ name }}"}
    assert client.post(f"/api/v1/prompts/{pid}/versions", json=body).status_code == 201
    r = client.post(f"/api/v1/prompts/{pid}/render", json={"variables": {"name": "x"}})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "RENDER_TIMEOUT"
    body = {"type": "text", "template_text": "{{ name * 10**8 }}"}
    assert client.post(f"/api/v1/prompts/{pid}/versions", json=body).status_code == 201
    r = client.post(f"/api/v1/prompts/{pid}/render", json={"variables": {"name": "x"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "TEMPLATE_TOO_LARGE"
