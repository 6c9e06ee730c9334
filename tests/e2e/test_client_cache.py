"""The client's prompt cache: a rendered prompt stays available while the server is down."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess

from appforge.client import Client

TOKEN = "af_cache_admin_token_0123456789"


def test_client_serves_stale_prompt_when_server_is_down(tmp_path: Path):
    server = ServerProcess({"APPFORGE_HOME": str(tmp_path), "APPFORGE_ADMIN_TOKEN": TOKEN})
    try:
        with Client(server.base, TOKEN, prompt_cache_ttl=0.2, max_retries=0) as af:
            uc = af.create_use_case("Cache")
            prompt = af.create_prompt(uc["id"], "p")
            af.create_version(prompt["id"], type="text", template_text="Hi {{ name }}")
            af.promote(prompt["id"], 1, "production")
            fresh = af.render(prompt["id"], {"name": "Ada"}, label="production")
            assert fresh["text"] == "Hi Ada"
            server.stop()
            time.sleep(0.3)  # past the TTL: the client tries the server first
            stale = af.render(prompt["id"], {"name": "Ada"}, label="production")
            assert stale == fresh
            with pytest.raises(httpx.TransportError):  # never fetched: nothing to serve
                af.render(prompt["id"], {"name": "Bo"}, label="production")
    finally:
        server.stop()
