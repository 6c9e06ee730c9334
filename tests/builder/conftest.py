"""Builder pages run with ``AppTest`` against the real API (TestClient transport)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

BUILDER = Path(__file__).resolve().parents[2] / "builder"


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Streamlit's script runner leaves the page as ``sys.modules["__main__"]``, which
    spawned processes of later tests would then run: put the real one back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture
def page(client: TestClient, admin_token: str) -> Callable[[str], AppTest]:
    """A builder page (``apps``, ``playground``, ...; ``app``: the entry) on the test API."""

    def make(name: str) -> AppTest:
        script = BUILDER / "app.py" if name == "app" else BUILDER / "views" / f"{name}.py"
        at = AppTest.from_file(str(script), default_timeout=60)
        at.session_state["appforge_http"] = client
        at.session_state["appforge_url"] = "http://testserver"
        at.session_state["appforge_token"] = admin_token
        return at

    return make
