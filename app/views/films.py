"""Films: everything a film's HTML report has, interactive: key numbers with their uncertainty, a
t-SNE map to hover, word tables and clouds, attention highlights, the trend over time, likes and
the film league. The numbers are the film's cached report (``pipeline.film_report``: computed
once per run, model and map size, kept in runs/<run>/analytics/), so a visit only reads them."""

from __future__ import annotations

import html
from typing import Any

import common
import pandas as pd
import streamlit as st

import pipeline
from pipeline import DoubanError, charts

FILM_PARAM = "film"
TSNE_CAPS = [300, 1000, 2000]
DEFAULT_CAP = 2000  # the reports stage's: its cached maps open instantly
SECTIONS = ["Stars", "Map", "Words", "Aspects", "Attention", "Time & likes", "League"]


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
        except DoubanError as err:  # the link's text is shown as typed, never as Markdown
            st.warning(
                "The film named in the link is not in this run; showing the most reviewed film.",
                icon=":material/warning:",
            )
            st.text(str(err))
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
    if not s["n"]:
        st.caption("No evaluated predictions for this film yet.")
        return
    help_ = f"on the {s['n']:,} reviews of {report.evaluated_on}, never seen in training"
    cols[2].metric(
        "mean predicted star",
        f"{s['mean_pred']:.2f}",
        delta=f"true mean on the same {s['n']:,}: {s['mean_star']:.2f}",
        delta_color="off",
        help=help_,
    )
    low, high = report.exact_ci
    cols[3].metric(
        "exact accuracy",
        f"{s['exact']:.1%}",
        help=f"{help_}; 95% bootstrap interval {low:.1%} – {high:.1%}",
    )
    cols[4].metric("off by ≤1 star", f"{s['off_by_one']:.1%}", help=help_)
    cols[5].metric("MAE (stars)", f"{s['mae']:.2f}", help=help_)
    st.caption(
        common.plain(
            f"Model {common.model_label(report.model)} on {s['n']:,} reviews of "
            f"{report.evaluated_on}; exact accuracy 95% interval {low:.1%} – {high:.1%}."
        )
    )
    if report.small_sample:
        st.warning(
            f"Only {s['n']} evaluated reviews: the accuracy is a rough indication (see its "
            "interval), not a measurement.",
            icon=":material/warning:",
        )


def stars_section(ctx: common.Context, report: Any) -> None:
    if not report.summary["n"]:
        common.needs(
            "True vs predicted stars appear once a model is evaluated",
            pipeline.douban_command("train", ctx.name),
        )
        return
    left, right = st.columns([3, 2])
    left.altair_chart(
        charts.true_vs_predicted(
            charts.distribution_long(report.distribution),
            title=f"true vs predicted ({report.evaluated_on})",
        ),
        width="stretch",
    )
    with right:
        normalised = st.toggle("normalise rows", value=True, key="film_cm_norm")
        matrix = report.confusion_normalised if normalised else report.confusion_counts
        st.altair_chart(
            charts.confusion_heatmap(
                matrix, normalised, title="confusion matrix", counts=report.confusion_counts
            ),
            width="content",
        )
    if len(report.models):
        st.markdown("**Every model on this film** (same reviews, best exact accuracy first)")
        columns = ["model", "n", "exact", "off_by_one", "mae", "mean_pred"]
        common.table(report.models[columns])
    estimate_section(report)


def estimate_section(report: Any) -> None:
    """The film's star mix as the model's probabilities alone estimate it, beside the truth."""
    e = report.star_estimate
    if e is None:
        return
    st.markdown("**Star mix estimated from the text alone** (what a crawl without stars tells)")
    rows = {
        f"true ({e['n']:,} test reviews)": [*e["true"], e["true_mean"]],
        f"estimated ({e['method'].upper()})": [*e["estimated"], e["estimated_mean"]],
    }
    table = pd.DataFrame(
        {
            name: [f"{x:.1%}" for x in values[:-1]] + [f"{values[-1]:.2f}"]
            for name, values in rows.items()
        },
        index=[f"{star}★" for star in range(1, 6)] + ["mean star"],
    ).T
    st.dataframe(table)
    st.caption(common.plain(e["note"]))


def map_section(report: Any) -> None:
    if report.tsne is None:
        st.info(common.plain(report.tsne_note))
        return
    colour = st.radio(
        "colour by",
        ["star", "pred_star"],
        horizontal=True,
        key="tsne_colour",
        format_func={"star": "true star", "pred_star": "predicted star"}.get,
    )
    st.altair_chart(charts.scatter_map(report.tsne, colour), width="stretch")
    st.caption(
        common.plain(
            f"{report.tsne_note}. Hover a point to read its review; scroll to zoom. Reviews the "
            "model trained on have no prediction."
        )
    )


def words_section(report: Any) -> None:
    left, right = st.columns([2, 3])
    with left:
        st.markdown("**Words that set the film apart** (TF-IDF against the other films)")
        common.table(report.top_words, height=400)
    with right:
        st.markdown("**Top words per star** (weighted log-odds against the other stars; count)")
        st.dataframe(report.star_table, height=400, placeholder="-")
    st.caption("Words said only once are left out: one review's word is not the film's.")
    if not report.clouds:
        st.caption("Too few words for a word cloud.")
        return
    st.markdown(
        "**Word clouds**: the film against the corpus (size = TF-IDF weight), then each star "
        "against the others (size = log-odds z-score)"
    )
    names = list(report.clouds)
    if "film" in report.clouds:
        st.image(report.clouds["film"], caption="the film")
        names.remove("film")
    cols = st.columns(3)
    for i, name in enumerate(names):
        cols[i % 3].image(report.clouds[name], caption=name)


def attention_section(report: Any) -> None:
    if not report.attention:
        st.info(common.plain(report.attention_note))
        return
    st.caption(
        common.plain(
            f"Attention of {common.model_label(report.attention_model)}: per true star, the "
            "most confident correct prediction and the worst mistake. Darker = more attention; "
            "hover a word."
        )
    )
    for ex in report.attention:
        top = ", ".join(f"{w} {a:.2f}" for w, a in ex.top_words)
        with st.container(border=True):
            st.markdown(
                f"{':material/check_circle:' if ex.kind == 'correct' else ':material/cancel:'} "
                f"true **{ex.star}★**, {common.plain(common.model_label(report.attention_model))} "
                f"predicted **{ex.pred_star}★** · confidence {ex.confidence:.0%}"
            )
            st.html(f'<div class="attention">{pipeline.highlight_html(ex.text, ex.words)}</div>')
            st.text(f"top words: {top}")


def time_section(report: Any) -> None:
    if report.trend is None:
        st.info("These reviews have no dates: no trend over time.")
    else:
        st.altair_chart(charts.trend(report.trend, report.model), width="stretch")
        st.caption(
            f"A month's mean is drawn only when at least {charts.MIN_MONTH_REVIEWS} reviews are "
            "behind it; the bars count every month's reviews."
        )
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
    shown = top[[c for c in ("like", "star", "predicted", "date", "comment") if c in top]]
    common.table(shown)


def league_section(report: Any) -> None:
    table = report.league
    st.markdown(
        "**Film league**: every film's mean true star and the model's mean prediction on "
        "its evaluated reviews (how many in brackets); this film solid"
    )
    if table["mean_true"].notna().any():
        st.altair_chart(charts.film_league(table, report.film), width="stretch")
    common.table(table)


def aspects_section(report: Any) -> None:
    """What the film's reviews praise and complain about, aspect by aspect (the report's own
    numbers); pick an aspect to read its most telling clauses, the words that name it
    highlighted."""
    table = report.aspects
    if table.empty:
        st.info("No clause of this film's reviews names an aspect of the taxonomy.")
        return
    st.markdown(
        "**Aspects**: each review is split into clauses; the clauses that name an aspect are "
        "scored alone. Green: share of the aspect's clauses that praise it; red: that complain."
    )
    st.altair_chart(charts.aspect_bars(table), width="stretch")
    common.table(pipeline.aspect_table(table))
    small = table.loc[table["small"], "english"].tolist()
    model = report.clause_model
    st.caption(
        common.plain(
            f"Clauses scored one by one by {pipeline.model_name(model)} ({model}); sentiment runs "
            "from -1 (a one-star clause) to +1 (five stars), with its 95% bootstrap interval; "
            "'other films' is the same aspect in the run's other films."
            + (f" Few clauses (under 10): {', '.join(small)}." if small else "")
        )
    )
    with st.expander("The words that name each aspect"):
        terms = report.aspect_terms
        st.dataframe(
            pd.DataFrame({"aspect": list(terms), "words": ["、".join(w) for w in terms.values()]}),
            hide_index=True,
        )
        st.caption(
            "The shipped seed words, the ones your settings add, and the words of this run that "
            "keep each aspect's company. Add or change words with `[aspects] terms = { plot = "
            '["脑洞"] }` in a settings file (`--config`) and prepare the run again.'
        )
    labels = pipeline.aspect_labels(table)
    aspect = st.selectbox("Read the clauses on", list(labels), format_func=labels.get,
                          key="aspect")  # fmt: skip
    told = report.aspect_clauses[aspect]
    for side, title in (("praise", "Most positive"), ("complaint", "Most negative")):
        st.markdown(f"**{title}**")
        if not told[side]:
            st.caption("none")
        for c in told[side]:
            looked = ""
            if c.get("attention_words"):  # the head reading the clause alone
                head = html.escape(pipeline.model_name(c["attention_model"]))
                seen = pipeline.highlight_html(c["attention_text"], c["attention_words"])
                looked = f"<div><small>{head} looked at:</small> {seen}</div>"
            st.html(
                f'<div class="attention">{pipeline.words_html(c["clause"], c["words"])} '
                f"<small>({c['sentiment']:+.2f} · review {c['star']}★)</small>{looked}</div>"
            )


def keep_cap() -> None:
    """Keep the map size in plain session state: a widget's own state is dropped on runs that
    do not draw it (other tabs), which would rebuild the report with the default size."""
    st.session_state["tsne_cap"] = st.session_state["_tsne_cap"] or DEFAULT_CAP


def show(ctx: common.Context, film: str) -> None:
    cap = st.session_state.get("tsne_cap", DEFAULT_CAP)
    with st.spinner("Computing the film's numbers once (the t-SNE map takes a few seconds)…"):
        report = common.cached(pipeline.film_report, ctx, film, ctx.model, cap)
    headline(report)
    tabs = st.tabs(SECTIONS, key="film_section", on_change="rerun")
    sections = {
        "Stars": lambda: stars_section(ctx, report),
        "Map": lambda: map_section(report),
        "Words": lambda: words_section(report),
        "Aspects": lambda: aspects_section(report),
        "Attention": lambda: attention_section(report),
        "Time & likes": lambda: time_section(report),
        "League": lambda: league_section(report),
    }
    for tab, name in zip(tabs, SECTIONS, strict=True):
        if tab.open:
            with tab:
                if name == "Map":
                    st.segmented_control(
                        "reviews on the map (at most)",
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
