"""Entry point of the Streamlit app: `streamlit run app/Home.py` (or `douban app`).

This script is the frame around every page: it draws the sidebar (run and model pickers, the demo
badge), puts the chosen run in session state and runs the page picked in the navigation. The
favicon is a local file: a ``:material/...:`` page icon would fetch it from the web.
"""

from __future__ import annotations

from pathlib import Path

import common
import streamlit as st

VIEWS = Path(__file__).parent / "views"

st.set_page_config(
    page_title="Douban sentiment studio", page_icon=str(common.FAVICON), layout="wide"
)
st.html(common.CSS)

st.session_state["_context"] = common.sidebar()

page = st.navigation(
    [
        st.Page(VIEWS / "overview.py", title="Overview", icon=":material/bar_chart:", default=True),
        st.Page(VIEWS / "films.py", title="Films", icon=":material/movie:"),
        st.Page(VIEWS / "score.py", title="Score a review", icon=":material/edit_note:"),
        st.Page(VIEWS / "reports.py", title="Reports", icon=":material/description:"),
        st.Page(VIEWS / "lab.py", title="Model lab", icon=":material/biotech:"),
    ]
)
page.run()
