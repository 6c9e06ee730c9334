"""GET /api/models: aliases and providers with live reachability (real servers)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr

from appforge.core.settings import OpenAISettings, Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def test_models_lists_aliases_and_providers_with_reachability(
    make_client: Callable[[Settings], TestClient],
    make_settings: Callable[..., Settings],
    llama_server: str,
) -> None:
    down = f"http://127.0.0.1:{_closed_port()}/v1"
    settings = make_settings(
        models={
            "default": "local:smollm2",
            "fast": "default",
            "remote": "openai:smollm2",
            "unlisted": "openai:other-model",
            "gone": "down:some-model",
            "broken": "nowhere:model",
        },
        openai=OpenAISettings(base_url=llama_server),
        providers={"down": OpenAISettings(base_url=down, api_key=SecretStr("sk-down-0123"))},
    )
    client = make_client(settings)
    for timeout in (0.05, 11):
        refused = client.get("/api/models", params={"timeout": timeout})
        assert refused.status_code == 422, (timeout, refused.text)
    r = client.get("/api/models", params={"timeout": 1})
    assert r.status_code == 200, r.text
    body = r.json()

    providers = _by_name(body["providers"])
    assert sorted(providers) == ["down", "local", "openai"]
    local = providers["local"]
    assert local["kind"] == "local"
    assert local["reachable"] is True and local["configured"] is True
    assert local["target"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert local["models"] == ["smollm2"]
    assert local["description"].startswith("tiny offline demo model (SmolLM2-135M)")
    assert "default" in body["hint"] and "Ollama" in body["hint"]
    openai = providers["openai"]
    assert openai["kind"] == "openai-compatible"
    assert openai["reachable"] is True and openai["error"] is None
    assert openai["target"] == llama_server.removesuffix("/v1")
    assert openai["models"] == ["smollm2"]
    gone = providers["down"]
    assert gone["reachable"] is False
    assert gone["error"]["code"] == "PROVIDER_UNAVAILABLE"
    assert "sk-down-0123" not in r.text

    aliases = _by_name(body["aliases"])
    assert aliases["default"]["target"] == "local:smollm2"
    assert aliases["fast"]["target"] == "local:smollm2"  # followed through "default"
    assert aliases["fast"]["reachable"] is True
    assert aliases["fast"]["description"] == local["description"]  # via "default"
    assert aliases["remote"] | {"error": None} == {
        "name": "remote",
        "target": "openai:smollm2",
        "source": "env",
        "description": None,
        "provider": "openai",
        "model": "smollm2",
        "reachable": True,
        "listed": True,
        "error": None,
    }
    assert aliases["unlisted"]["reachable"] is True and aliases["unlisted"]["listed"] is False
    assert aliases["gone"]["reachable"] is False
    assert aliases["gone"]["error"]["code"] == "PROVIDER_UNAVAILABLE"
    assert aliases["broken"]["reachable"] is False
    assert aliases["broken"]["error"]["code"] == "MODEL_NOT_FOUND"


def test_models_openai_without_key_is_not_configured(
    make_client: Callable[[Settings], TestClient],
    make_settings: Callable[..., Settings],
    monkeypatch: Any,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = make_client(make_settings())
    body = client.get("/api/models").json()
    openai = _by_name(body["providers"])["openai"]
    assert openai["configured"] is False and openai["reachable"] is False
    assert openai["target"] == "https://api.openai.com"
    assert _by_name(body["aliases"])["default"]["reachable"] is True


def test_models_needs_a_token(
    make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    client = make_client(settings)
    r = client.get("/api/models", headers={"Authorization": ""})
    assert r.status_code == 401
