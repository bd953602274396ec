"""Score a review: type one (or pick an example) and see the stars, the probabilities and the
words the attention head looked at; or upload a CSV and download every review's score."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import charts
import common
import pandas as pd
import streamlit as st

MAX_UPLOAD_MB = 5
MAX_BATCH_ROWS = 2000  # CPU scoring runs at tens of reviews a second; more belongs in the CLI
MAX_CHARS = 2000
TEXT_KEY = "score_text"
RESULT_KEY = "score_result"


def stars_label(star: int) -> str:
    return "★" * star + "☆" * (5 - star)


def load_scorer(ctx: common.Context) -> Any | None:
    """The run's scorer for the sidebar's model (when it is a saved model), or None with a
    message saying what is missing."""
    from pipeline.modeling.bundle import EncoderMismatchError, list_models

    saved = list_models(ctx.paths.models)
    if not saved:
        common.needs(
            f"Run `{ctx.name}` has no trained model to score with",
            f"douban train --run {ctx.name}",
        )
        return None
    model = ctx.model if ctx.model in saved else None
    try:
        return common.scorer_for(ctx, model)
    except (OSError, EncoderMismatchError, ValueError) as err:  # missing files, other encoder
        st.error(f"Cannot load a model of run `{ctx.name}`: {err}")
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
    from pipeline.analytics.attention import highlight_html, top_attention_words

    if result.get("error"):
        st.error(f"This review cannot be scored: {result['error']}.")
        return
    for warning in result.get("warnings", []):
        st.warning(warning)
    star = int(result["pred_star"])
    cols = st.columns(3)
    cols[0].metric("Predicted star", f"{star} {stars_label(star)}")
    if result.get("expected_star") is not None:
        cols[1].metric(
            "Expected star", f"{result['expected_star']:.2f}", help="Sum of star × probability"
        )
    if result.get("regression") is not None:
        cols[2].metric(
            "Regression head",
            f"{result['regression']:.2f}",
            help="The regression head's continuous star",
        )
    st.caption(f"model: {result.get('model')}")
    if result.get("probs"):
        st.altair_chart(charts.probability_bars(result["probs"], star), width="stretch")
    words = [(w["word"], w["start"], w["end"], w["weight"]) for w in result.get("words", [])]
    if words and result.get("clean_text"):
        st.markdown(
            f"**Where the attention head looked** (`{result.get('attention_model')}`; darker = "
            "more attention; hover a word)"
        )
        st.html(f'<div class="attention">{highlight_html(result["clean_text"], words)}</div>')
        top = pd.DataFrame(top_attention_words(words, k=8), columns=["word", "attention"])
        st.dataframe(
            top,
            hide_index=True,
            column_config={
                "attention": st.column_config.ProgressColumn(
                    "attention", min_value=0.0, max_value=1.0, format="%.3f"
                )
            },
        )
    else:
        st.caption("No attention head in this run: no word highlights.")


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
                help=text,
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
    if submitted:
        with st.spinner("Scoring…"):
            st.session_state[RESULT_KEY] = scorer.explain(text)
    if RESULT_KEY in st.session_state:
        show_result(st.session_state[RESULT_KEY])


def read_upload(upload: Any) -> list[Any]:
    """The review texts of an uploaded CSV or TXT file (pipeline.predict.files.read_texts)."""
    from pipeline.predict.files import read_texts

    suffix = Path(upload.name).suffix.lower() or ".csv"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(upload.getvalue())
        return list(read_texts(path))


def with_progress(texts: list[Any], bar: Any) -> Iterator[Any]:
    for i, text in enumerate(texts):
        if i % 16 == 0:
            bar.progress(i / len(texts), text=f"scoring {i:,} of {len(texts):,} reviews")
        yield text


def score_batch(scorer: Any, texts: Iterable[Any], total: int) -> tuple[str, dict[str, int]]:
    from pipeline.predict.files import write_records

    bar = st.progress(0.0, text="scoring")
    out = io.StringIO()
    counts = write_records(
        scorer, with_progress(list(texts), bar), out, "csv", chunk_size=32, total=total
    )
    bar.progress(1.0, text=f"scored {counts['rows']:,} reviews")
    return out.getvalue(), counts


def batch(ctx: common.Context, scorer: Any) -> None:
    st.markdown(
        f"A CSV with a `comment`, `text`, `review` or `content` column (or a single column), or a "
        f"TXT file with one review per line. Up to {MAX_UPLOAD_MB} MB and {MAX_BATCH_ROWS:,} "
        f"reviews; larger files: `douban score --input FILE --run {ctx.name}`."
    )
    upload = st.file_uploader(
        "Reviews file", type=["csv", "txt"], max_upload_size=MAX_UPLOAD_MB, key="batch_upload"
    )
    if upload is None:
        return
    if upload.size > MAX_UPLOAD_MB * 1024 * 1024:
        st.error(f"{upload.name} is {upload.size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB.")
        return
    try:
        texts = read_upload(upload)
    except (ValueError, csv.Error) as err:
        st.error(f"Cannot read {upload.name}: {err}")
        return
    if not texts:
        st.error(f"{upload.name} has no reviews (only a header, or empty).")
        return
    if len(texts) > MAX_BATCH_ROWS:
        st.error(
            f"{upload.name} has {len(texts):,} reviews; the app scores up to "
            f"{MAX_BATCH_ROWS:,}. Use `douban score --input {upload.name} --run {ctx.name}`."
        )
        return
    key = ("batch", upload.file_id, scorer.model_name)
    if st.session_state.get("batch_key") != key:
        st.session_state["batch_csv"], st.session_state["batch_counts"] = score_batch(
            scorer, texts, len(texts)
        )
        st.session_state["batch_key"] = key
    output, counts = st.session_state["batch_csv"], st.session_state["batch_counts"]
    st.success(f"Scored {counts['rows']:,} reviews ({counts['errors']:,} could not be scored).")
    scored = pd.read_csv(io.StringIO(output), keep_default_na=False, na_values=[""])
    first = ["row", "pred_star", "expected_star", "regression", "error", "warnings", "text"]
    st.dataframe(scored[first + [c for c in scored.columns if c not in first]], hide_index=True)
    st.download_button(
        "Download scores (CSV)",
        output.encode("utf-8-sig"),
        file_name=f"{Path(upload.name).stem}_scored.csv",
        mime="text/csv",
    )


ctx = common.current()
st.title("Score a review")
scorer = load_scorer(ctx)
if scorer is not None:
    st.caption(f"Run `{ctx.name}` · model `{scorer.model_name}`")
    one, many = st.tabs(["One review", "A file of reviews"])
    with one:
        single_review(ctx, scorer)
    with many:
        batch(ctx, scorer)
