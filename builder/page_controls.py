"""Controls several builder pages share: the message a change leaves for the page's next
run, a choice among records that may have gone, a page number over a long list, and a
delete behind a confirming tick.

Each takes the ``st.session_state`` keys its page names it by, so a page keeps its
widget keys (and the tests that drive them) as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NoReturn, TypeVar

import streamlit as st

from builder.connection import ERRORS, show_error

T = TypeVar("T")


def show_flash(key: str) -> None:
    """Show the message a change left under ``key`` (see :func:`flash_and_rerun`), once."""
    message = st.session_state.pop(key, None)
    if message:
        st.success(message)


def flash_and_rerun(key: str, message: str) -> NoReturn:
    """After a change: run the page again (it shows the new state), saying ``message``."""
    st.session_state[key] = message
    st.rerun()


def choose(
    label: str,
    records: Mapping[str, T],
    key: str,
    describe: Callable[[T], str],
    index: int = 0,
) -> str:
    """A select box over ``records`` (id -> record) shown by ``describe``; the id chosen.

    A choice kept under ``key`` whose record went (deleted here or elsewhere) is
    forgotten first, so the box falls back to the ``index``-th record, not an error.
    """
    if st.session_state.get(key) not in records:
        st.session_state.pop(key, None)
    picked = st.selectbox(
        label, list(records), index=index, key=key, format_func=lambda i: describe(records[i])
    )
    return str(picked)


def page_offset(total: int, size: int, key: str, label: str = "Page") -> int:
    """Where the chosen page starts in ``total`` items shown ``size`` at a time.

    The page number (widget ``key``) shows only when they do not fit on one page; a
    page past the end (items went since it was chosen) becomes the last one, before
    the widget is drawn, which would refuse a value above its maximum.
    """
    pages = max(1, -(-total // size))
    if st.session_state.get(key, 1) > pages:
        st.session_state[key] = pages
    if pages > 1:
        st.number_input(f"{label} (of {pages})", min_value=1, max_value=pages, key=key)
    return (int(st.session_state.get(key, 1)) - 1) * size


def confirmed_delete(
    question: str,
    button: str,
    keys: tuple[str, str],
    delete: Callable[[], object],
) -> bool:
    """A primary ``button`` enabled by ticking ``question`` (``keys``: the tick's, the
    button's); on a click, ``delete()``. True once it deleted (the tick is cleared for
    what the page shows next); False if not clicked, or the API refused (shown)."""
    confirm_key, button_key = keys
    confirm = st.checkbox(question, key=confirm_key)
    if not st.button(button, key=button_key, disabled=not confirm, type="primary"):
        return False
    try:
        delete()
    except ERRORS as exc:
        show_error(exc)
        return False
    st.session_state.pop(confirm_key, None)
    return True
