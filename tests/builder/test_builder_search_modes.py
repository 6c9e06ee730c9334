"""The builder offers the search ``mode`` and ``keyword_weight``: in the retrieve step's
editor and in the datasource page's search panel; and the datasource page's chunk
settings (which re-ingest) and URL refresh schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from appforge.core.settings import Settings
from tests.datasources.support import serve_pages

Page = Callable[[str], AppTest]


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """The page may add URL entries served from 127.0.0.1."""
    return make_settings(datasources={"url_allowlist": ["127.0.0.1"]})


def _widget(at: AppTest, kind: str, label: str) -> Any:
    [found] = [w for w in getattr(at, kind) if w.label == label]
    return found


def _retrieve_step(at: AppTest) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(at.text_area(key="apps_new_yaml").value)
    step: dict[str, Any] = doc["steps"][0]
    return step


def test_retrieve_step_editor_sets_mode_and_keyword_weight(page: Page):
    at = page("apps").run()
    at.selectbox(key="apps_template").select("support-bot").run()
    assert _widget(at, "selectbox", "Search mode (step 1)").value == "hybrid"
    assert _widget(at, "number_input", "Keyword weight (step 1)").value == 0.5
    assert "keyword_weight" not in _retrieve_step(at)  # drawing the form changes nothing
    _widget(at, "selectbox", "Search mode (step 1)").select("keyword").run()
    _widget(at, "number_input", "Keyword weight (step 1)").set_value(0.8).run()
    assert not at.exception and not at.error
    step = _retrieve_step(at)
    assert (step["mode"], step["keyword_weight"]) == ("keyword", 0.8)
    assert _widget(at, "selectbox", "Search mode (step 1)").value == "keyword"
    _widget(at, "selectbox", "Search mode (step 1)").select("").run()  # the datasources' own
    assert "mode" not in _retrieve_step(at) and _retrieve_step(at)["keyword_weight"] == 0.8


def test_datasource_page_searches_by_mode_and_rechunks(page: Page):
    at = page("datasources").run()
    at.text_input(key="ds_new_name").set_value("manual")
    [create] = [b for b in at.button if b.label == "Create"]
    create.click().run()
    at.text_input(key="ds_entry_name").set_value("kettle.txt")
    at.text_area(key="ds_entry_text").set_value("Descale the kettle with citric acid monthly.")
    at.button(key="ds_add").click().run()
    at.button(key="ds_wait").click().run()
    assert any("1 of 1 processed" in s.label for s in at.status)

    at.text_input(key="ds_query").set_value("zzqx")  # a word no chunk has
    at.selectbox(key="ds_mode").select("keyword").run()
    at.button(key="ds_search").click().run()
    assert any("Nothing found" in str(i.value) for i in at.info)
    at.selectbox(key="ds_mode").select("vector").run()  # the nearest chunk, whatever it is
    at.button(key="ds_search").click().run()
    assert any("citric acid" in t.value for t in at.text)
    at.selectbox(key="ds_mode").select("hybrid").run()
    at.slider(key="ds_keyword_weight").set_value(1.0).run()
    at.text_input(key="ds_query").set_value("citric")
    at.button(key="ds_search").click().run()
    assert not at.error and any("citric acid" in t.value for t in at.text)

    at.number_input(key="ds_chunk_size").set_value(200)
    at.selectbox(key="ds_default_mode").select("keyword")
    at.button(key="ds_chunking_save").click().run()
    assert not at.exception and not at.error
    assert any("1 entries are re-ingested" in str(s.value) for s in at.success)


def test_datasource_page_sets_a_url_entrys_refresh_schedule(page: Page):
    at = page("datasources").run()
    at.text_input(key="ds_new_name").set_value("web")
    [create] = [b for b in at.button if b.label == "Create"]
    create.click().run()
    with serve_pages() as pages:
        url = pages.add("/kettle", b"<html><body><p>Descale it monthly.</p></body></html>")
        at.text_input(key="ds_entry_url").set_value(url)
        at.selectbox(key="ds_entry_refresh").select("weekly")
        at.button(key="ds_add").click().run()
        at.button(key="ds_wait").click().run()
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "refresh" in d.value.columns)
    assert list(table["status"]) == ["ready"] and list(table["refresh"]) == ["weekly"]
    assert table["next refresh"][0].endswith("UTC")
    [schedule] = [s for s in at.selectbox if s.key.startswith("ds_schedule_")]
    assert schedule.value == "weekly" and at.button(key="ds_schedule_set").disabled
    schedule.select("daily").run()
    at.button(key="ds_schedule_set").click().run()
    assert any("refreshed daily" in str(s.value) for s in at.success)
    table = next(d.value for d in at.dataframe if "refresh" in d.value.columns)
    assert list(table["refresh"]) == ["daily"]
