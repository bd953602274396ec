"""Score a review: type one (or pick an example) and see one model's stars, probabilities and the
words its attention head looked at; or upload a CSV and download every review's score. The model
is the sidebar's (the run's default first); changing it rescores what is shown."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common
import pandas as pd
import streamlit as st

import pipeline
from pipeline import DoubanError, charts

MAX_UPLOAD_MB = 5
MAX_BATCH_ROWS = 2000  # a few seconds of CPU scoring; more belongs in the CLI
MAX_CHARS = 2000
TEXT_KEY = "score_text"
RESULT_KEY = "score_result"  # (model, text, explanation as a dict)


def stars_label(star: int) -> str:
    return "★" * star + "☆" * (5 - star)


def load_scorer(ctx: common.Context) -> Any | None:
    """The scorer of the sidebar's model, or None with a message saying what is missing."""
    if not ctx.data.saved_models:
        common.needs(
            f"Run {ctx.name} has no trained model to score with",
            pipeline.douban_command("train", ctx.name),
        )
        return None
    try:
        return common.scorer_for(ctx)
    except DoubanError as err:  # missing or damaged files, another encoder
        st.error(common.plain(f"Cannot load model {ctx.model} of run {ctx.name}: {err}"))
        return None


def example_reviews(run: Any) -> dict[int, str]:
    """One short test-split review per star, to click instead of typing."""
    reviews = run.reviews
    pool = reviews[(reviews["split"] == "test") & reviews["comment"].str.len().between(8, 120)]
    if pool.empty:
        pool = reviews
    examples = {}
    for star, group in pool.groupby("star"):
        examples[int(star)] = str(group.sample(1, random_state=0)["comment"].iloc[0])
    return examples


def set_text(text: str) -> None:
    st.session_state[TEXT_KEY] = text
    st.session_state.pop(RESULT_KEY, None)


def show_result(result: dict[str, Any]) -> None:
    """One model's outputs: its star, probabilities, continuous star and attention words."""
    if result.get("error"):
        st.error(common.plain(f"This review cannot be scored: {result['error']}."))
        return
    for warning in result.get("warnings", []):
        st.warning(common.plain(warning))
    star = int(result["pred_star"])
    st.caption(common.plain(f"Every number below is from {common.model_label(result['model'])}."))
    cols = st.columns(3)
    cols[0].metric("Predicted star", f"{star} {stars_label(star)}")
    if result.get("expected_star") is not None:
        cols[1].metric(
            "Expected star", f"{result['expected_star']:.2f}", help="Sum of star × probability"
        )
    if result.get("regression") is not None:
        cols[2].metric(
            "Continuous star",
            f"{result['regression']:.2f}",
            help="This model's star before rounding (it regresses)",
        )
    if result.get("probs"):
        st.altair_chart(charts.probability_bars(result["probs"], star), width="stretch")
    words = [(w["word"], w["start"], w["end"], w["weight"]) for w in result.get("words", [])]
    if not (words and result.get("clean_text")):
        st.caption("No attention head in this run: no word highlights.")
        return
    explainer = result.get("attention_model")
    same = explainer == result["model"]
    st.markdown(
        "**Where the attention head looked** (darker = more attention; hover a word)  \n"
        + common.plain(
            f"The model's own attention ({common.model_label(explainer)})"
            if same
            else f"From {common.model_label(explainer)}, the head that explains this model "
            "(it has no attention of its own)"
        )
    )
    st.html(f'<div class="attention">{pipeline.highlight_html(result["clean_text"], words)}</div>')
    top = pd.DataFrame(pipeline.top_attention_words(words, k=8), columns=["word", "attention"])
    st.dataframe(
        top,
        hide_index=True,
        column_config={
            "attention": st.column_config.ProgressColumn(
                "attention", min_value=0.0, max_value=1.0, format="%.3f"
            )
        },
    )


def single_review(ctx: common.Context, scorer: Any) -> None:
    examples = common.cached(example_reviews, ctx)
    if examples:
        st.markdown("Try an example from the test split:")
        cols = st.columns(len(examples))
        for col, (star, text) in zip(cols, sorted(examples.items()), strict=True):
            col.button(
                f"{star}★ review",
                key=f"example:{star}",
                on_click=set_text,
                args=(text,),
                help=common.plain(text),
                width="stretch",
            )
    with st.form("score_form"):
        text = st.text_area(
            "Review",
            key=TEXT_KEY,
            max_chars=MAX_CHARS,
            height=120,
            placeholder="比如：剧情紧凑，演员演技在线，值得一看！",
        )
        submitted = st.form_submit_button("Score", type="primary")
    shown = st.session_state.get(RESULT_KEY)
    if shown is not None and shown[0] != scorer.model_name:
        text, submitted = shown[1], True  # the model changed: rescore what is shown
    if submitted:
        with st.spinner(f"Scoring with {common.model_label(scorer.model_name)}…"):
            result = scorer.explain(text).to_dict()
        st.session_state[RESULT_KEY] = (scorer.model_name, text, result)
    if RESULT_KEY in st.session_state:
        show_result(st.session_state[RESULT_KEY][2])


def read_upload(upload: Any) -> tuple[list[Any], int]:
    """The review texts of an uploaded CSV, JSON Lines, Parquet or TXT file and how many blank
    lines were skipped (a blank TXT line is not a review; an empty review in a table row is, and
    is reported)."""
    suffix = Path(upload.name).suffix.lower() or ".csv"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(upload.getvalue())
        texts = list(pipeline.read_texts(path))
    kept = [t for t in texts if t is not None and (suffix != ".txt" or str(t).strip())]
    return kept, len(texts) - len(kept)


def with_progress(texts: list[Any], bar: Any) -> Iterator[Any]:
    for i, text in enumerate(texts):
        if i % 16 == 0:
            bar.progress(i / len(texts), text=f"scoring {i:,} of {len(texts):,} reviews")
        yield text


def score_batch(scorer: Any, texts: list[Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every text's record as a table, rows numbered from 0 as in `douban score` and the
    service."""
    bar = st.progress(0.0, text="scoring")
    out = io.StringIO()
    counts = pipeline.write_records(
        scorer, with_progress(texts, bar), out, "csv", chunk_size=256, total=len(texts)
    )
    bar.progress(1.0, text=f"scored {counts['rows']:,} reviews")
    scored = pd.read_csv(io.StringIO(out.getvalue()), keep_default_na=False, na_values=[""])
    return scored, counts


def batch(ctx: common.Context, scorer: Any) -> None:
    st.markdown(
        "A CSV or Parquet file with a `comment`, `text`, `review` or `content` column (or a single "
        "column), JSON Lines with that key, or a TXT file with one review per line. Up to "
        f"{MAX_UPLOAD_MB} MB and {MAX_BATCH_ROWS:,} reviews; larger files:"
    )
    st.code(pipeline.douban_command("score --input FILE", ctx.name), language="bash")
    upload = st.file_uploader(
        "Reviews file",
        type=["csv", "txt", "jsonl", "parquet"],
        max_upload_size=MAX_UPLOAD_MB,
        key="batch_upload",
    )
    if upload is None:
        return
    name = common.plain(upload.name)
    if upload.size > MAX_UPLOAD_MB * 1024 * 1024:
        st.error(f"{name} is {upload.size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB.")
        return
    try:
        texts, blank = read_upload(upload)
    except DoubanError as err:
        st.error(common.plain(f"Cannot read {upload.name}: {err}"))
        return
    if not texts:
        st.error(f"{name} has no reviews (only a header, or empty).")
        return
    if len(texts) > MAX_BATCH_ROWS:
        st.error(
            f"{name} has {len(texts):,} reviews; the app scores up to {MAX_BATCH_ROWS:,}. Use "
            "`douban score --input FILE` for more."
        )
        return
    key = ("batch", upload.file_id, scorer.model_name)
    if st.session_state.get("batch_key") != key:
        st.session_state["batch_scored"], st.session_state["batch_counts"] = score_batch(
            scorer, texts
        )
        st.session_state["batch_key"] = key
    scored, counts = st.session_state["batch_scored"], st.session_state["batch_counts"]
    skipped = f"; {blank:,} blank lines skipped" if blank else ""
    st.success(
        f"Scored {counts['rows']:,} reviews ({counts['errors']:,} could not be scored{skipped}) "
        f"with {common.plain(common.model_label(scorer.model_name))}."
    )
    first = ["row", "pred_star", "expected_star", "regression", "error", "warnings", "text"]
    table = scored[first + [c for c in scored.columns if c not in first]]
    st.dataframe(table.style.format(precision=3), hide_index=True, placeholder="-")
    st.download_button(
        "Download scores (CSV)",
        table.to_csv(index=False).encode("utf-8-sig"),
        file_name=f"{Path(upload.name).stem}_scored.csv",
        mime="text/csv",
    )


ctx = common.current()
st.title("Score a review")
scorer = load_scorer(ctx)
if scorer is not None:
    st.caption(
        common.plain(f"Run {ctx.name} · model {common.model_label(scorer.model_name)}")
        + " (pick another in the sidebar)"
    )
    one, many = st.tabs(["One review", "A file of reviews"])
    with one:
        single_review(ctx, scorer)
    with many:
        batch(ctx, scorer)
