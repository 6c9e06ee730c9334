"""A run's time limit stops a model server that takes the request and never answers:
the wait for it is bounded by the time the run has left, not by the provider's own
timeout (60 s a read, with retries), and the run ends RUN_TIMEOUT."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from ports import silent_port

from appforge.core.settings import OpenAISettings, Settings

HUNG_APP = """version: 1
name: Hung
type: text
input:
  q: {type: string}
steps:
  - id: a
    kind: llm
    prompt: {user: "{{ input.q }}"}
output:
  a: "{{ a.text }}"
limits:
  timeout_seconds: 1
"""


@pytest.fixture
def silent_server() -> Iterator[str]:
    with silent_port() as port:
        yield f"http://127.0.0.1:{port}/v1"


def test_a_model_server_that_never_answers_ends_the_run_at_its_time_limit(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    silent_server: str,
):
    # Without the run's deadline, each try would wait the provider's 30 s.
    openai = OpenAISettings(base_url=silent_server, timeout=30, max_retries=2)
    client = make_client(make_settings(openai=openai, models={"default": "openai:any"}))
    app = client.post("/api/apps", content=HUNG_APP, headers={"Content-Type": "text/yaml"})
    url = f"/api/apps/{app.json()['uuid']}/run"
    for stream in (False, True):
        answer = client.post(url, json={"input": {"q": "hi"}, "stream": stream})
        assert answer.status_code == 504, answer.text
        error = answer.json()["error"]
        assert error["code"] == "RUN_TIMEOUT"
        stored = client.get(f"/api/runs/{error['details']['run_id']}").json()
        assert stored["status"] == "timeout"
