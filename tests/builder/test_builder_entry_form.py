"""The datasources page's entry form: metadata rows, several at once, cleared after an add."""

from __future__ import annotations

import json
from collections.abc import Callable

from streamlit.testing.v1 import AppTest

Page = Callable[[str], AppTest]


def test_metadata_rows_typed_values_and_form_cleared_after_add(page: Page):
    at = page("datasources").run()
    at.text_input(key="ds_new_name").set_value("manuals")
    [create] = [b for b in at.button if b.label == "Create"]
    create.click().run()
    assert [t.key for t in at.text_input if t.key.startswith("ds_meta_key_")] == ["ds_meta_key_0"]
    at.button(key="ds_meta_more").click().run()
    assert [t.label for t in at.text_input if t.key.startswith("ds_meta_")] == [
        "Metadata key 1",
        "Metadata value 1",
        "Metadata key 2",
        "Metadata value 2",
    ]
    at.text_input(key="ds_meta_key_0").set_value("product")
    at.text_input(key="ds_meta_value_0").set_value("widget")
    at.text_input(key="ds_meta_key_1").set_value("year")
    at.text_input(key="ds_meta_value_1").set_value("2024")
    at.text_input(key="ds_entry_name").set_value("care.txt")
    at.text_area(key="ds_entry_text").set_value("Wipe the widget with a dry cloth.")
    at.button(key="ds_add").click().run()
    assert not at.exception and not at.error
    assert any("Added 1 entry" in s.value for s in at.success)
    # The form is empty again, with one metadata row.
    assert at.text_area(key="ds_entry_text").value == ""
    assert at.text_input(key="ds_entry_name").value == ""
    assert [t.value for t in at.text_input if t.key.startswith("ds_meta_")] == ["", ""]
    table = next(d.value for d in at.dataframe if "metadata" in d.value.columns)
    # "2024" reads as JSON: stored as a number, so md_year filters compare numbers.
    assert json.loads(table["metadata"][0]) == {"product": "widget", "year": 2024}


def test_add_with_nothing_given_warns_and_stores_nothing(page: Page):
    at = page("datasources").run()
    at.text_input(key="ds_new_name").set_value("empty")
    [create] = [b for b in at.button if b.label == "Create"]
    create.click().run()
    at.text_input(key="ds_meta_key_0").set_value("product")
    at.button(key="ds_add").click().run()
    assert any("Paste some text" in w.value for w in at.warning)
    assert any("No entries yet" in c.value for c in at.caption)
