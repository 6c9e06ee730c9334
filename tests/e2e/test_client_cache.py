"""The client's prompt cache: a rendered prompt stays available while the server is down."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess

from appforge.client import Client

TOKEN = "af_cache_admin_token_0123456789"


class Clock:
    """The prompt cache's clock, moved by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_client_serves_stale_prompt_when_server_is_down(tmp_path: Path):
    server = ServerProcess({"APPFORGE_HOME": str(tmp_path), "APPFORGE_ADMIN_TOKEN": TOKEN})
    clock = Clock()
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url.path)]})
    try:
        with Client(
            server.base, TOKEN, http=http, prompt_cache_ttl=60, max_retries=0, clock=clock
        ) as af:
            uc = af.create_use_case("Cache")
            prompt = af.create_prompt(uc.id, "p")
            af.create_version(prompt.id, type="text", template_text="Hi {{ name }}")
            af.promote(prompt.id, 1, "production")
            fresh = af.render(prompt.id, {"name": "Ada"}, label="production")
            assert fresh.text == "Hi Ada"
            server.stop()
            asked = len(sent)
            assert af.render(prompt.id, {"name": "Ada"}, label="production") == fresh
            assert len(sent) == asked  # fresh: the server is not asked
            clock.now += 61  # past the TTL: the client tries the server first
            stale = af.render(prompt.id, {"name": "Ada"}, label="production")
            assert stale == fresh and len(sent) == asked + 1
            with pytest.raises(httpx.TransportError):  # never fetched: nothing to serve
                af.render(prompt.id, {"name": "Bo"}, label="production")
    finally:
        server.stop()
