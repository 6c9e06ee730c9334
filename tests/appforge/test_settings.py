"""Settings: read from APPFORGE_* variables; every one documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from appforge.core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_documented_in_readme():
    text = README.read_text()
    names = _env_names(Settings, "APPFORGE_")
    assert "APPFORGE_LOCAL__N_CTX" in names
    missing = [n for n in names if f"`{n}`" not in text]
    assert missing == []
    # Each has its own row in the settings table: name, default, what it does. (A row
    # once ran into another table's, and the name was still "in the README".)
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| `")}
    unlisted = [n for n in names if f"`{n}`" not in rows]
    assert unlisted == []
    misshapen = [n for n in names if rows[f"`{n}`"].count(" | ") != 2]
    assert misshapen == []


def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path))
    monkeypatch.setenv("APPFORGE_LOCAL__N_CTX", "4096")
    monkeypatch.setenv("APPFORGE_MODELS", '{"default": "local:smollm2", "fast": "default"}')
    monkeypatch.setenv("APPFORGE_ADMIN_TOKEN", "s3cret")
    s = Settings()
    assert s.home == tmp_path
    assert s.local.n_ctx == 4096
    assert s.models["fast"] == "default"
    assert "s3cret" not in repr(s)
    assert s.resolved_database_url() == f"sqlite:///{tmp_path / 'appforge.db'}"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("APPFORGE_OPENAI__API_KEY", "sk-\u00e9t\u00e9"),
        ("APPFORGE_OPENAI__API_KEY", "sk-a\x01b"),
        ("APPFORGE_OPENAI__HEADERS", '{"X-Team": "\u00e9quipe"}'),
    ],
)
def test_a_key_or_header_no_http_client_can_send_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str
):
    monkeypatch.setenv("APPFORGE_HOME", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match="printable ASCII"):
        Settings()
