"""ProviderRegistry: aliases, prefixes and lazy providers, with the real local model."""

from __future__ import annotations

from pathlib import Path

import pytest

from appforge.core.settings import LocalModelSettings, Settings
from providers.base import GenerationParams
from providers.errors import ModelNotFoundError
from providers.local import LocalProvider
from providers.registry import ProviderRegistry


def _settings(tmp_path: Path, models: dict[str, str] | None = None) -> Settings:
    return Settings(
        home=tmp_path,
        models=models if models is not None else {"default": "local:smollm2"},
        local=LocalModelSettings(),
    )


@pytest.fixture
def registry(tmp_path: Path, local_provider: LocalProvider) -> ProviderRegistry:
    models = {
        "default": "local:smollm2",
        "fast": "default",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "broken": "nowhere:model",
    }
    return ProviderRegistry(_settings(tmp_path, models), providers={"local": local_provider})


def test_registry_resolve_prefixed_name(
    registry: ProviderRegistry, local_provider: LocalProvider
) -> None:
    provider, model = registry.resolve("local:smollm2")
    assert provider is local_provider
    assert model == "smollm2"


@pytest.mark.parametrize("alias", ["default", "fast"])
def test_registry_resolve_alias_chain(
    registry: ProviderRegistry, local_provider: LocalProvider, alias: str
) -> None:
    provider, model = registry.resolve(alias)
    assert provider is local_provider
    assert model == "smollm2"


def test_registry_resolved_provider_generates(registry: ProviderRegistry) -> None:
    provider, model = registry.resolve("default")
    completion = provider.complete(
        model,
        [{"role": "user", "content": "Say hello."}],
        GenerationParams(temperature=0.0, seed=1, max_tokens=8),
    )
    assert completion.text
    assert completion.usage.completion_tokens <= 8


def test_registry_alias_cycle_raises(registry: ProviderRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match="cycle") as info:
        registry.resolve("loop-a")
    assert info.value.details["cycle"] == ["loop-a", "loop-b", "loop-a"]


def test_registry_self_alias_raises(tmp_path: Path, local_provider: LocalProvider) -> None:
    registry = ProviderRegistry(
        _settings(tmp_path, {"me": "me"}), providers={"local": local_provider}
    )
    with pytest.raises(ModelNotFoundError, match="cycle"):
        registry.check("me")


@pytest.mark.parametrize("name", ["nowhere:model", "broken"])
def test_registry_unknown_prefix_names_configured_providers(
    registry: ProviderRegistry, name: str
) -> None:
    with pytest.raises(ModelNotFoundError, match="'nowhere'") as info:
        registry.resolve(name)
    assert "local" in str(info.value)
    assert info.value.details["providers"] == ["local", "openai"]
    assert info.value.status_code == 422


def test_registry_unknown_alias_names_configured_aliases(registry: ProviderRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match="gpt-5") as info:
        registry.resolve("gpt-5")
    assert "default" in info.value.details["aliases"]
    assert "default" in str(info.value)


def test_registry_unknown_local_model_raises(registry: ProviderRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match="tinyllama"):
        registry.check("local:tinyllama")


@pytest.mark.parametrize("name", ["local:", ":smollm2", ""])
def test_registry_malformed_name_raises(registry: ProviderRegistry, name: str) -> None:
    with pytest.raises(ModelNotFoundError):
        registry.check(name)


def test_registry_check_does_not_load_a_model(tmp_path: Path) -> None:
    registry = ProviderRegistry(_settings(tmp_path))
    registry.check("default")
    provider, model = registry.resolve("default")
    assert isinstance(provider, LocalProvider)
    assert model == "smollm2"
    assert not provider.is_loaded
    assert registry.resolve("local:smollm2")[0] is provider  # built once
    registry.close()


def test_registry_check_missing_model_file_raises(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.local = LocalModelSettings(model_path=tmp_path / "gone.gguf")
    registry = ProviderRegistry(settings)
    with pytest.raises(ModelNotFoundError, match="gone.gguf"):
        registry.check("default")
    registry.close()


def test_registry_close_leaves_injected_providers_open(
    registry: ProviderRegistry, local_provider: LocalProvider
) -> None:
    local_provider.get_llama("smollm2")
    registry.close()
    assert local_provider.is_loaded
