"""Overview: the dataset, and how every model did on every evaluation of the run."""

from __future__ import annotations

from typing import Any

import common
import pandas as pd
import streamlit as st

import pipeline
from pipeline import charts

# metrics.json keys, in the order the comparison table shows them (headers: pipeline names)
COLUMNS = [
    "n",
    "accuracy",
    "off_by_one",
    "mae",
    "rmse",
    "qwk",
    "macro_f1",
    "expected_star_mae",
    "median_star_accuracy",
    "median_star_mae",
    "ece",
    "log_loss",
]
MAP_CAP = 2000
EVALUATION_HELP = {
    "random": "the run's own random train/val/test split",
    "film_holdout": "test reviews come from films never seen in training",
    "cross_corpus": "trained on this run, tested on another corpus",
}


def dataset_section(ctx: common.Context) -> None:
    summary: dict[str, Any] = ctx.data.summary
    st.subheader("Dataset")
    rejected = summary.get("rejected", {})
    cols = st.columns(5)
    cols[0].metric("rows read", f"{summary.get('rows_read', 0):,}")
    cols[1].metric("reviews kept", f"{summary.get('kept', 0):,}")
    cols[2].metric("films", f"{len(summary.get('films', {})):,}")
    cols[3].metric("duplicates dropped", f"{summary.get('duplicates', 0):,}")
    cols[4].metric("rejected", f"{sum(rejected.values()):,}")

    left, right = st.columns([3, 2])
    stars = pd.DataFrame(
        {
            "star": [int(s) for s in summary.get("stars", {})],
            "reviews": list(summary.get("stars", {}).values()),
        }
    )
    left.altair_chart(charts.star_bars(stars, title="reviews per star"), width="stretch")
    with right:
        st.markdown("**Rejected rows by reason**")
        if rejected:
            frame = pd.DataFrame({
                "reason": [pipeline.REJECT_MEANINGS.get(r, r) for r in rejected],
                "id": list(rejected),
                "rows": list(rejected.values()),
            })  # fmt: skip
            common.table(frame)
        else:
            st.caption("No row was rejected.")
        splits = {k: v for k, v in summary.get("splits", {}).items() if isinstance(v, int)}
        if splits:
            st.markdown("**Splits**")
            frame = pd.DataFrame({"split": list(splits), "reviews": list(splits.values())})
            common.table(frame)
        if summary.get("holdout_films"):
            st.caption("Held-out films: " + common.plain(", ".join(summary["holdout_films"])))
    with st.expander("Films and input files"):
        common.table(ctx.data.films)
        names = summary.get("run_words", [])
        if names:
            shown = "、".join(names[:40]) + (" …" if len(names) > 40 else "")
            st.caption(
                f"jieba learnt {len(names)} names from the reviews (kept whole in words, "
                "attention and TF-IDF):"
            )
            st.text(shown)  # words from the reviews: text, never Markdown
    if ctx.data.recorded_settings:
        with st.expander("Settings the run was prepared with"):
            st.json(ctx.data.recorded_settings, expanded=1)
        if summary.get("files"):
            files = pd.DataFrame(summary["files"]).drop(columns=["path"], errors="ignore")
            files["rejected"] = files["rejected"].map(
                lambda r: ", ".join(f"{k}: {v}" for k, v in r.items()) if isinstance(r, dict) else r
            )
            common.table(files)


def comparison_table(models: dict[str, Any], split: str, default: str | None) -> pd.DataFrame:
    """One row per model: every scalar metric of ``split``, best exact accuracy on that split
    first; the run's default model is marked."""
    rows = []
    for name, result in models.items():
        metrics = result.get(split, {})
        if not metrics.get("n"):
            continue
        mark = "default" if name == default else ""
        rows.append({"model": name, "": mark, **{key: metrics.get(key) for key in COLUMNS}})
    table = pd.DataFrame(rows, columns=["model", "", *COLUMNS])
    table = table.dropna(axis=1, how="all")
    return table.sort_values("accuracy", ascending=False, kind="stable").reset_index(drop=True)


def confusion_grid(models: dict[str, Any], split: str, names: list[str], normalised: bool) -> None:
    key = "confusion_normalised" if normalised else "confusion"
    cols = st.columns(min(len(names), 3) or 1)
    for i, name in enumerate(names):
        matrix = models[name][split].get(key)
        if matrix is None:
            continue
        frame = pd.DataFrame(matrix, index=range(1, 6), columns=range(1, 6))
        counts = models[name][split].get("confusion")
        counts = pd.DataFrame(counts, index=range(1, 6), columns=range(1, 6)) if counts else None
        chart = charts.confusion_heatmap(
            frame, normalised, title=pipeline.model_name(name), counts=counts
        )
        cols[i % len(cols)].altair_chart(chart, width="content")


def distributions(models: dict[str, Any], split: str, name: str) -> pd.DataFrame:
    dist = models[name][split]["distribution"]
    rows = []
    for which, key in (("true", "true"), ("predicted", "pred")):
        counts = dist[key]
        total = max(sum(counts), 1)
        rows += [
            {"star": s, "which": which, "reviews": c, "share": c / total}
            for s, c in zip(range(1, 6), counts, strict=True)
        ]
    return pd.DataFrame(rows)


def calibration_frame(models: dict[str, Any], split: str) -> pd.DataFrame:
    rows = [
        {"model": name, **bin_}
        for name, result in models.items()
        for bin_ in result.get(split, {}).get("reliability", [])
    ]
    return pd.DataFrame(rows)


def evaluation_section(ctx: common.Context, evaluation: str, section: dict[str, Any]) -> None:
    models = section.get("models", {})
    splits = [s for s in section.get("splits", ["val", "test"]) if s in ("test", "val")]
    st.caption(
        f"{evaluation}: {EVALUATION_HELP.get(evaluation, '')}"
        + (f" · evaluated {section['evaluated']}" if section.get("evaluated") else "")
    )
    split = (
        st.segmented_control(
            "split",
            sorted(splits, key=lambda s: s != "test"),
            default="test" if "test" in splits else splits[0],
            key=f"split:{evaluation}",
        )
        or splits[0]
    )
    table = comparison_table(models, split, ctx.data.default_model)
    if table.empty:
        st.info(f"No model has {split} predictions in this evaluation.")
        return
    common.table(table)
    st.caption(
        f"Sorted by exact accuracy on {split}. The default model was chosen on validation "
        f"({pipeline.describe_choice(ctx.data.metrics.get('default_model') or {})}), so its "
        "test figures are an honest estimate."
    )
    with st.expander("What the models and numbers mean"):
        st.dataframe(pipeline.glossary(table["model"].tolist()), hide_index=True, placeholder="-")
    names = table["model"].tolist()

    st.markdown(f"**Exact and off-by-one accuracy** ({split}, same order as the table)")
    bars = table.rename(columns={"accuracy": "exact", "off_by_one": "off by ≤1"})
    st.altair_chart(charts.grouped_metric_bars(bars, ["exact", "off by ≤1"]), width="stretch")

    st.markdown("**Confusion matrices** (rows: true star, columns: predicted star)")
    normalised = st.toggle("normalise rows", value=True, key=f"norm:{evaluation}")
    shown = st.multiselect(
        "models",
        names,
        default=names[:3],
        key=f"cm:{evaluation}",
        format_func=pipeline.model_name,
    )
    confusion_grid(models, split, shown, normalised)

    st.markdown("**True vs predicted star distribution**")
    pick = ctx.model if ctx.model in names else names[0]
    which = st.selectbox(
        "model",
        names,
        index=names.index(pick),
        key=f"dist:{evaluation}",
        format_func=common.model_label,
    )
    st.altair_chart(charts.true_vs_predicted(distributions(models, split, which)), width="stretch")
    per_class = models[which][split].get("per_class")
    if per_class:
        with st.expander(f"Precision, recall and F1 per star: {pipeline.model_name(which)}"):
            frame = pd.DataFrame(per_class).T.rename_axis("star").reset_index()
            common.table(frame)

    st.markdown("**Calibration** (top-star confidence vs accuracy; probabilistic models)")
    calib = calibration_frame(models, split)
    if calib.empty:
        st.caption("No probabilistic model in this evaluation.")
        return
    st.altair_chart(charts.reliability(calib), width="stretch")
    st.caption(
        f"Bins with fewer than {charts.MIN_BIN_REVIEWS} reviews are faint points, not part of "
        "the line: their accuracy is too noisy to read."
    )
    with st.expander("Reliability table"):
        common.table(calib)


def map_section(ctx: common.Context) -> None:
    st.subheader("Map of the corpus")
    with st.spinner("Placing the corpus on a t-SNE map (once per run and model)…"):
        points, note = common.cached(pipeline.corpus_map, ctx, ctx.model, MAP_CAP)
    if points is None:
        st.info(common.plain(note))
        return
    st.altair_chart(charts.scatter_map(points, by_film=True), width="stretch")
    st.caption(
        common.plain(
            f"{note}. Each dot is a review placed by its encoder features: nearby dots read "
            "alike to the encoder; colour is the true star. Hover a dot for its review and film."
        )
    )


def models_section(ctx: common.Context) -> None:
    st.subheader("Models")
    evaluations = ctx.data.metrics.get("evaluations", {})
    if not evaluations:
        common.needs(
            "No model has been trained or evaluated in this run yet",
            pipeline.douban_command("train", ctx.name),
        )
        return
    has_features = ctx.data.manifest("features") is not None  # without opening the store
    encoder = ctx.data.encoder_spec if has_features else ctx.data.metrics.get("encoder", {})
    if encoder.get("name"):
        st.caption(
            common.plain(
                f"Encoder {encoder['name']}. Baselines and heads side by side; default model: "
                f"{common.model_label(ctx.data.default_model)}."
            )
        )
    names = [e for e in ("random", "film_holdout", "cross_corpus") if e in evaluations]
    names += [e for e in evaluations if e not in names]
    for tab, evaluation in zip(st.tabs(names), names, strict=True):
        with tab:
            evaluation_section(ctx, evaluation, evaluations[evaluation])


ctx = common.current()
st.title("Overview")
st.caption(f"Run {common.plain(ctx.name)} · model set {common.plain(ctx.data.generation)}")
dataset_section(ctx)
models_section(ctx)
if ctx.data.manifest("features") is not None:
    map_section(ctx)
