"""A real server process: X-Forwarded-For counts only from APPFORGE_TRUSTED_PROXIES.

The client here connects from 127.0.0.1, which uvicorn on its own would trust
as a proxy; `appforge serve` leaves the decision to the API's setting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from server_process import ServerProcess

TOKEN = "af_proxies_server_admin_token_0123"
APP = """\
version: 1
name: Public echo
public: true
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt: {user: "{{ input.question }}"}
output:
  answer: "{{ answer.text }}"
limits: {public_rate: "1/hour"}
"""


def _start(start: Callable[[dict[str, str]], ServerProcess], home: Path, **env: str) -> str:
    server = start({"APPFORGE_HOME": str(home), "APPFORGE_ADMIN_TOKEN": TOKEN, **env})
    with httpx.Client(base_url=server.base, headers={"Authorization": f"Token {TOKEN}"}) as api:
        r = api.post("/api/apps", content=APP, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 201, r.text
        return f"{server.base}/api/apps/{r.json()['uuid']}/run"


def _codes(url: str, forwarded: list[str]) -> list[int]:
    # An invalid input is counted, then refused (422) before any model runs.
    return [
        httpx.post(url, json={"input": {}}, headers={"X-Forwarded-For": f}).status_code
        for f in forwarded
    ]


def test_proxies_server_spoofed_forwarded_for_is_limited_as_the_peer(
    start_server: Callable[[dict[str, str]], ServerProcess], tmp_path: Path
):
    url = _start(start_server, tmp_path / "a")
    assert _codes(url, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]) == [422, 429, 429]


def test_proxies_server_trusted_proxy_forwards_the_client(
    start_server: Callable[[dict[str, str]], ServerProcess], tmp_path: Path
):
    url = _start(start_server, tmp_path / "b", APPFORGE_TRUSTED_PROXIES='["127.0.0.1/32"]')
    assert _codes(url, ["192.0.2.1", "192.0.2.2", "192.0.2.1"]) == [422, 422, 429]
