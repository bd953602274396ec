"""Films: everything a film's HTML report has (pipeline.reports.FilmReport), interactive: a
t-SNE map to hover, word tables and clouds, attention highlights, the trend over time, likes and
the film league."""

from __future__ import annotations

from typing import Any

import charts
import common
import pandas as pd
import streamlit as st

from pipeline.analytics import words

FILM_PARAM = "film"
TSNE_CAPS = [300, 1000, 2000]
SECTIONS = ["Stars", "Map", "Words", "Attention", "Time & likes", "League"]


# Cached computations: each takes the RunData first (see common.cached).


def build_report(run: Any, film: str, model: str | None, tsne_cap: int) -> Any:
    from pipeline.reports.pages import FilmReport

    return FilmReport.build(run, film, model, tsne_cap=tsne_cap)


@st.cache_data(show_spinner=False, max_entries=64)
def clouds(report_key: tuple, _report: Any) -> dict[str, Any]:
    """Word-cloud images (RGB arrays) of a report's words: the film against the corpus, then
    each star. ``report_key`` identifies the (cached) report."""
    from pipeline.fonts import cjk_font_path

    tables = {_report.film: _report.top_words}
    tables |= {f"{s}★": t for s, t in _report.star_words.items()}
    return {
        name: words.word_cloud(
            dict(zip(t["word"], t["score"], strict=True)), cjk_font_path(), width=600, height=300
        )
        for name, t in tables.items()
        if len(t)
    }


# Sections


def pick_film(ctx: common.Context) -> str | None:
    films = ctx.data.films
    if films.empty:
        st.info("This run has no reviews.")
        return None
    keys = films["film"].tolist()
    labels = {
        row.film: f"{common.film_label(row)} · {row.reviews:,} reviews"
        for row in films.itertuples()
    }
    asked = st.query_params.get(FILM_PARAM)
    default = 0
    if asked:
        try:
            default = keys.index(ctx.data.resolve_film(asked))
        except KeyError as err:
            st.warning(str(err))
    film = st.selectbox(
        "Film (type a Chinese or English name to search)",
        keys,
        index=default,
        format_func=labels.__getitem__,
        key=f"film:{ctx.name}",
    )
    st.query_params[FILM_PARAM] = film
    return film


def headline(report: Any) -> None:
    s = report.summary
    cols = st.columns(6)
    cols[0].metric("reviews", f"{report.reviews:,}")
    cols[1].metric("mean star", f"{report.mean_star:.2f}")
    if s["n"]:
        help_ = f"on the {s['n']:,} reviews of {report.evaluated_on}, never seen in training"
        cols[2].metric("mean predicted star", f"{s['mean_pred']:.2f}", help=help_)
        cols[3].metric("exact accuracy", f"{s['exact']:.0%}", help=help_)
        cols[4].metric("off-by-one accuracy", f"{s['off_by_one']:.0%}", help=help_)
        cols[5].metric("MAE (stars)", f"{s['mae']:.2f}", help=help_)
        st.caption(f"Model `{report.model}` on {s['n']:,} reviews of {report.evaluated_on}.")
    else:
        st.caption("No evaluated predictions for this film yet.")


def stars_section(ctx: common.Context, report: Any) -> None:
    if not report.summary["n"]:
        common.needs(
            "True vs predicted stars appear once a model is evaluated",
            f"douban train --run {ctx.name}",
        )
        return
    dist = report.distribution.reset_index()
    long = pd.concat(
        [
            dist.assign(which="true", share=dist["true_share"], reviews=dist["true"]),
            dist.assign(
                which="predicted", share=dist["predicted_share"], reviews=dist["predicted"]
            ),
        ]
    )[["star", "which", "share", "reviews"]]
    left, right = st.columns([3, 2])
    left.altair_chart(
        charts.true_vs_predicted(long, title=f"true vs predicted ({report.evaluated_on})"),
        width="stretch",
    )
    with right:
        normalised = st.toggle("normalise rows", value=True, key="film_cm_norm")
        matrix = report.confusion_normalised if normalised else report.confusion_counts
        st.altair_chart(
            charts.confusion_heatmap(matrix, normalised, title="confusion matrix"), width="content"
        )
    if len(report.models):
        st.markdown("**Every model on this film**")
        st.dataframe(
            report.models,
            hide_index=True,
            column_config={
                "exact": st.column_config.NumberColumn(format="percent"),
                "off_by_one": st.column_config.NumberColumn(format="percent"),
                "mae": st.column_config.NumberColumn(format="%.2f"),
                "mean_star": st.column_config.NumberColumn(format="%.2f"),
                "mean_pred": st.column_config.NumberColumn(format="%.2f"),
            },
        )


def map_section(report: Any) -> None:
    if report.tsne is None:
        st.info(report.tsne_note)
        return
    colour = st.radio(
        "colour by",
        ["star", "pred_star"],
        horizontal=True,
        key="tsne_colour",
        format_func={"star": "true star", "pred_star": "predicted star"}.get,
    )
    tsne = report.tsne
    points = tsne.assign(
        review=tsne["text"].str.slice(0, 140),
        predicted=tsne["pred_star"].astype("string").fillna("– (a training review)"),
    )
    tooltip = [
        charts.tooltip("review:N", "review"),
        charts.tooltip("star:O", "true star"),
        charts.tooltip("predicted:N", "predicted star"),
    ]
    st.altair_chart(charts.scatter_map(points, colour, tooltip), width="stretch")
    st.caption(
        f"{report.tsne_note}. Hover a point to read its review; scroll to zoom. "
        "Reviews the model trained on have no prediction (grey when coloured by prediction)."
    )


def words_section(ctx: common.Context, cap: int, report: Any) -> None:
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Words that set the film apart** (TF-IDF against the other films)")
        st.dataframe(
            report.top_words,
            hide_index=True,
            height=400,
            column_config={"score": st.column_config.NumberColumn(format="%.3f")},
        )
    with right:
        st.markdown("**Top words per star** (word and count)")
        st.dataframe(words.star_words_table(report.star_words), height=400)
    st.markdown("**Word clouds** (size = TF-IDF weight)")
    try:
        images = clouds((ctx.key, report.film, ctx.model, cap), report)
    except FileNotFoundError as err:  # no CJK font installed
        st.warning(str(err))
        return
    if not images:
        st.caption("Too few words for a word cloud.")
        return
    cols = st.columns(3)
    for i, (name, image) in enumerate(images.items()):
        cols[i % 3].image(image, caption=name)


def attention_section(report: Any) -> None:
    if not report.attention:
        st.info(report.attention_note)
        return
    st.caption(
        f"Attention of `{report.attention_model}`: per true star, the most confident "
        "correct prediction and the worst mistake. Darker = more attention; hover a word."
    )
    for ex in report.attention:
        top = ", ".join(f"{w} {a:.2f}" for w, a in ex.top_words)
        with st.container(border=True):
            st.markdown(
                f"{':material/check_circle:' if ex.kind == 'correct' else ':material/cancel:'} "
                f"true **{ex.star}★**, predicted "
                f"**{ex.pred_star}★** · confidence {ex.confidence:.0%}"
            )
            st.html(f'<div class="attention">{ex.html}</div>')  # escaped by analytics.attention
            st.caption(f"top words: {top}")


def time_section(report: Any) -> None:
    if report.trend is None:
        st.info("These reviews have no dates: no trend over time.")
    else:
        table = report.trend
        names = {"mean_star": "all reviews", "mean_pred": f"predicted ({report.model})"}
        long = table.melt(
            id_vars=["month"],
            value_vars=[c for c in names if c in table],
            var_name="series",
            value_name="star",
        ).dropna(subset=["star"])
        long["series"] = long["series"].map(names)
        st.altair_chart(
            charts.line(
                long,
                "month:T",
                "star:Q",
                title="mean star by month",
                color="series:N",
                y_domain=(1, 5),
            ),
            width="stretch",
        )
        st.altair_chart(charts.month_bars(table, title="reviews per month"), width="stretch")
    likes = report.likes
    if likes is None:
        st.info("These reviews have no likes.")
        return
    st.markdown("**Do the most-liked reviews agree with the average?**")
    cols = st.columns(4)
    cols[0].metric("mean star", f"{likes['mean_star']:.2f}")
    cols[1].metric("like-weighted mean star", f"{likes['like_weighted_mean_star']:.2f}")
    cols[2].metric("top-10 liked mean star", f"{likes['top_liked_mean_star']:.2f}")
    cols[3].metric("likes", f"{likes['total_likes']:,}")
    top = likes["top_liked"]
    st.dataframe(top[[c for c in ("like", "star", "date", "comment") if c in top]], hide_index=True)


def league_section(report: Any) -> None:
    table = report.league
    st.markdown(
        "**Film league**: every film's mean true star and the model's mean prediction on "
        "its evaluated reviews"
    )
    if table["mean_true"].notna().any():
        st.altair_chart(charts.film_league(table, report.film), width="stretch")
    st.dataframe(
        table.style.apply(
            lambda r: ["background-color: #e8f5e9" if r["film"] == report.film else ""] * len(r),
            axis=1,
        ),
        hide_index=True,
        column_config={
            **{
                c: st.column_config.NumberColumn(format="%.2f")
                for c in ("mean_star", "mean_true", "mean_pred", "error")
            },
            **{c: st.column_config.NumberColumn(format="%d") for c in ("rank_true", "rank_pred")},
        },
    )


def keep_cap() -> None:
    """Keep the map size in plain session state: a widget's own state is dropped on runs that
    do not draw it (other tabs), which would rebuild the report with the default size."""
    st.session_state["tsne_cap"] = st.session_state["_tsne_cap"] or TSNE_CAPS[0]


def show(ctx: common.Context, film: str) -> None:
    cap = st.session_state.get("tsne_cap", TSNE_CAPS[0])
    with st.spinner("Computing the film's numbers (the t-SNE map takes a few seconds)…"):
        report = common.cached(build_report, ctx, film, ctx.model, cap)
    headline(report)
    tabs = st.tabs(SECTIONS, key="film_section", on_change="rerun")
    sections = {
        "Stars": lambda: stars_section(ctx, report),
        "Map": lambda: map_section(report),
        "Words": lambda: words_section(ctx, cap, report),
        "Attention": lambda: attention_section(report),
        "Time & likes": lambda: time_section(report),
        "League": lambda: league_section(report),
    }
    for tab, name in zip(tabs, SECTIONS, strict=True):
        if tab.open:
            with tab:
                if name == "Map":
                    st.segmented_control(
                        "reviews on the map (at most; sampled by star)",
                        TSNE_CAPS,
                        default=cap,
                        key="_tsne_cap",
                        on_change=keep_cap,
                    )
                sections[name]()


ctx = common.current()
st.title("Films")
film = pick_film(ctx)
if film is not None:
    show(ctx, film)
