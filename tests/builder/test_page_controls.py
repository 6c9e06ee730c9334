"""The controls builder pages share (``builder.page_controls``), each in a page of its own
run with AppTest: a choice that survives its record going, paging that survives a list
getting shorter, a confirmed delete."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _chooser() -> None:
    import streamlit as st

    from builder.page_controls import choose

    picked = choose("Thing", st.session_state["records"], "pick", str.upper, index=1)
    st.markdown(f"picked {picked}")


def _paged_list() -> None:
    import streamlit as st

    from builder.page_controls import page_offset

    offset = page_offset(st.session_state["total"], 20, "pg", "Cases page")
    st.markdown(f"offset {offset}")


def _deletable() -> None:
    import streamlit as st

    from builder.page_controls import confirmed_delete, flash_and_rerun, show_flash

    def delete() -> None:
        if st.session_state.get("refuse"):
            raise TimeoutError("the server took too long")
        st.session_state["deleted"] = st.session_state.get("deleted", 0) + 1

    show_flash("thing_flash")
    if confirmed_delete("Yes, delete the thing", "Delete thing", ("thing_ok", "thing_del"), delete):
        flash_and_rerun("thing_flash", "Deleted the thing")


def _markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def test_choose_forgets_a_choice_whose_record_went():
    at = AppTest.from_function(_chooser, default_timeout=60)
    at.session_state["records"] = {"a": "ant", "b": "bee", "c": "cat"}
    at.run()
    box = at.selectbox(key="pick")
    assert box.options == ["ANT", "BEE", "CAT"] and box.value == "b"  # index 1 at first
    box.set_value("c").run()
    assert _markdown(at) == ["picked c"]
    at.session_state["records"] = {"a": "ant", "b": "bee"}  # "c" was deleted
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="pick").value == "b" and _markdown(at) == ["picked b"]


def test_page_offset_follows_the_page_and_a_list_getting_shorter():
    at = AppTest.from_function(_paged_list, default_timeout=60)
    at.session_state["total"] = 20  # fits on one page: no page number
    at.run()
    assert not at.exception and not at.number_input and _markdown(at) == ["offset 0"]
    at.session_state["total"] = 45
    at.run()
    assert at.number_input(key="pg").label == "Cases page (of 3)"
    at.number_input(key="pg").set_value(3).run()
    assert _markdown(at) == ["offset 40"]
    # Items went while page 3 was shown: the last page now, not an error.
    at.session_state["total"] = 25
    at.run()
    assert not at.exception, at.exception
    assert at.number_input(key="pg").label == "Cases page (of 2)"
    assert at.number_input(key="pg").value == 2 and _markdown(at) == ["offset 20"]
    at.session_state["total"] = 3
    at.run()
    assert not at.exception and not at.number_input and _markdown(at) == ["offset 0"]


def test_confirmed_delete_waits_for_the_tick_and_shows_a_refusal():
    at = AppTest.from_function(_deletable, default_timeout=60)
    at.run()
    assert at.button(key="thing_del").disabled
    at.checkbox(key="thing_ok").check().run()
    assert not at.button(key="thing_del").disabled
    at.session_state["refuse"] = True
    at.button(key="thing_del").click().run()
    assert [e.value for e in at.error] == ["TIMEOUT: the server took too long"]
    assert not at.success and "deleted" not in at.session_state
    assert at.checkbox(key="thing_ok").value  # still ticked: the delete can be tried again
    at.session_state["refuse"] = False
    at.button(key="thing_del").click().run()
    # Deleted, and the page ran again: it says so once, and the tick was cleared.
    assert [s.value for s in at.success] == ["Deleted the thing"]
    assert at.session_state["deleted"] == 1 and not at.error
    assert not at.checkbox(key="thing_ok").value and at.button(key="thing_del").disabled
    at.run()
    assert not at.success and at.session_state["deleted"] == 1
