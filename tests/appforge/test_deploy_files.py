"""docker-compose.yml and the Dockerfile follow the code, checked without Docker: every
``APPFORGE_*`` variable the compose file sets is a setting and parses, every model alias
names a configured provider, every command line is one the CLI takes, and the image
gets every package."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from appforge.cli import main
from appforge.core.settings import BUILTIN_PROVIDERS, Settings

ROOT = Path(__file__).resolve().parents[2]
# What an operator exports before `docker compose up` (the file refuses to start without).
SAMPLES = {
    "POSTGRES_PASSWORD": "pw",
    "APPFORGE_SECRET_KEY": "k" * 40,
    "APPFORGE_ADMIN_TOKEN": "af_" + "0" * 32,
    "APPFORGE_METRICS__TOKEN": "scrape-token",
}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _interpolate(value: str) -> str:
    """Compose's ``${NAME:?message}`` and ``${NAME:-default}``, from SAMPLES."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if name in SAMPLES:
            return SAMPLES[name]
        assert kind == ":-", f"${{{name}}} has no sample and no default"
        return rest

    return re.sub(r"\$\{(\w+)(:[?-])?([^}]*)\}", one, value)


def test_compose_environment_is_settings_that_parse(monkeypatch: pytest.MonkeyPatch):
    env = {k: _interpolate(str(v)) for k, v in _compose()["x-appforge-env"].items()}
    for name in env:
        assert name.startswith("APPFORGE_"), name
        path = name.removeprefix("APPFORGE_").lower().split("__")
        assert path[0] in Settings.model_fields, f"{name} is not a setting"
        if len(path) > 1:
            section = Settings.model_fields[path[0]].annotation
            assert section is not None and path[1] in section.model_fields, name
    for name in [n for n in os.environ if n.startswith("APPFORGE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.database_url and settings.database_url.startswith("postgresql://")
    assert settings.chroma_url and settings.redis_url and settings.secret_key
    for model in settings.models.values():
        provider = model.split(":", 1)[0]
        assert provider in settings.providers or provider in BUILTIN_PROVIDERS, model


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_compose_commands_are_cli_commands():
    services = _compose()["services"]
    for name in ("api", "worker"):
        args = [_interpolate(str(a)) for a in services[name]["command"]]
        command = main.get_command(click.Context(main), args[0])
        assert command is not None, args
        for arg in args[1:]:
            assert arg.split("=", 1)[0] in _options(command), (name, arg)
        # The CLI parses it for real (no command runs: only the arguments are read).
        command.make_context(args[0], args[1:])
    assert "--no-worker" in services["api"]["command"]


def test_image_installs_every_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert packages == copied
    # With the versions the suite passed with, as the README's install and .ci/run.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\bconstraints\.txt\b", dockerfile, re.M)
    assert "pip install . -c constraints.txt" in dockerfile
    assert "-c constraints.txt" in (ROOT / ".ci" / "run").read_text()
