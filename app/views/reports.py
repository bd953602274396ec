"""Reports: write a film's self-contained HTML report (or every film's, with the index) into
reports/<run>/ with ``pipeline.write_reports``, open one right here, or download them. A film's
numbers come from its cached analytics, so a report the Films page has shown is written in
about a second."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import common
import streamlit as st

import pipeline
from pipeline import DoubanError

VIEW_HEIGHT = 900
PAGE_PARAM = "report"  # ?report=<page>.html opens that page here (links inside an open page)
def reports_dir() -> Path:
    """Where `douban report` writes: $DOUBAN_REPORTS_DIR (`douban app --reports-dir`) or
    reports/."""
    return pipeline.Settings().reports_dir


def generate(ctx: common.Context, films: list[str]) -> list[Path]:
    """One film at a time, so the progress bar moves; each call refreshes index.html."""
    bar = st.progress(0.0, text="writing reports")
    written: list[Path] = []
    for i, film in enumerate(films):
        bar.progress(i / len(films), text=f"{film} ({i + 1} of {len(films)}): computing…")
        pages = pipeline.write_reports(
            ctx.data, films=[film], model=ctx.model, reports_dir=reports_dir(), progress=False
        )
        written += [p for p in pages if p.name != "index.html"]
    bar.progress(1.0, text=f"wrote {len(written)} report(s)")
    return written + [reports_dir() / ctx.name / "index.html"]


def zipped(paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, arcname=path.name)
    return buffer.getvalue()


def existing(ctx: common.Context) -> None:
    folder = reports_dir() / ctx.name
    pages = sorted(folder.glob("*.html"), key=lambda p: (p.name != "index.html", p.name))
    st.subheader("Reports on disk")
    if not pages:
        st.caption(common.plain(f"None yet in {folder}."))
        return
    st.caption(common.plain(f"{folder} · self-contained HTML: open offline, share as a file."))
    cols = st.columns([3, 1, 1], vertical_alignment="bottom")
    names = [p.name for p in pages]
    asked = st.query_params.get(PAGE_PARAM)
    if asked in names:  # a link inside an open page: show that page, once
        st.session_state["report_page"] = pages[names.index(asked)]
        st.session_state["report_open"] = True
        del st.query_params[PAGE_PARAM]
    page = cols[0].selectbox("Page", pages, format_func=lambda p: p.name, key="report_page")
    cols[1].download_button(
        "Download page",
        lambda: page.read_bytes(),
        file_name=page.name,
        mime="text/html",
        on_click="ignore",
        key="download_page",
    )
    cols[2].download_button(
        f"Download all {len(pages)} (zip)",
        lambda: zipped(pages),
        file_name=f"{ctx.name}_reports.zip",
        mime="application/zip",
        on_click="ignore",
        key="download_zip",
    )
    if st.toggle("Open it here", key="report_open"):
        html = pipeline.embeddable_page(page.read_text(encoding="utf-8"), PAGE_PARAM)
        st.iframe(html, height=VIEW_HEIGHT)


ctx = common.current()
st.title("Reports")
st.markdown(
    "A report is one self-contained HTML page per film (key numbers, star distribution, confusion "
    "matrix, t-SNE map, words, word clouds, attention examples, trend, likes, league) plus an "
    "index, with the same charts as this app. The same from the command line:"
)
st.code(pipeline.douban_command("report --all", ctx.name), language="bash")
films = ctx.data.films
labels = {
    row.film: f"{common.film_label(row)} · {row.reviews:,} reviews" for row in films.itertuples()
}
every = st.toggle("all films", key="report_all")
chosen = (
    list(labels)
    if every
    else st.multiselect(
        "Films",
        list(labels),
        format_func=labels.__getitem__,
        key="report_films",
        placeholder="type a Chinese or English name",
    )
)
st.caption(
    common.plain(
        "Model: "
        + (
            common.model_label(ctx.model)
            if ctx.model
            else "none (no model trained: reports show the data only)"
        )
    )
)
if st.button("Generate", type="primary", disabled=not chosen, key="report_generate"):
    try:
        written = generate(ctx, chosen)
    except (DoubanError, ValueError) as err:
        st.error(common.plain(f"Could not write the reports: {err}"))
    else:
        st.success(common.plain(f"Wrote {len(written)} page(s) to {written[-1].parent}."))
existing(ctx)
