"""The appforge builder: ``streamlit run builder/app.py`` (``appforge serve`` starts it).

Each page is a script in ``builder/views/`` that can also run alone (the tests do).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="appforge builder", layout="wide")
page = st.navigation(
    [
        st.Page(VIEWS / "apps.py", title="Apps", icon=":material/apps:", default=True),
        st.Page(VIEWS / "playground.py", title="Playground", icon=":material/chat:"),
        st.Page(VIEWS / "datasources.py", title="Datasources", icon=":material/database:"),
        st.Page(VIEWS / "prompts.py", title="Prompts", icon=":material/edit_note:"),
        st.Page(VIEWS / "runs.py", title="Runs", icon=":material/history:"),
        st.Page(VIEWS / "analytics.py", title="Analytics", icon=":material/monitoring:"),
        st.Page(VIEWS / "datasets.py", title="Datasets", icon=":material/dataset:"),
        st.Page(VIEWS / "evaluations.py", title="Evaluations", icon=":material/fact_check:"),
        st.Page(VIEWS / "compare.py", title="Compare evaluations", icon=":material/compare:"),
        st.Page(VIEWS / "settings.py", title="Settings", icon=":material/settings:"),
        st.Page(VIEWS / "audit.py", title="Audit log", icon=":material/policy:"),
    ]
)
page.run()
