"""Overview: the dataset, and how every model did on every evaluation of the run."""

from __future__ import annotations

from typing import Any

import charts
import common
import pandas as pd
import streamlit as st

# metrics.json columns, in the order the comparison table shows them
COLUMNS = {
    "n": "reviews",
    "accuracy": "exact",
    "off_by_one": "off-by-one",
    "mae": "MAE",
    "rmse": "RMSE",
    "qwk": "QWK",
    "macro_f1": "macro-F1",
    "expected_star_mae": "E[star] MAE",
    "median_star_accuracy": "median-star exact",
    "median_star_mae": "median-star MAE",
    "ece": "ECE",
    "log_loss": "log loss",
}
PERCENT = {"exact", "off-by-one", "macro-F1", "median-star exact"}
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
            st.dataframe(
                pd.DataFrame({"reason": list(rejected), "rows": list(rejected.values())}),
                hide_index=True,
            )
        else:
            st.caption("No row was rejected.")
        splits = {k: v for k, v in summary.get("splits", {}).items() if isinstance(v, int)}
        if splits:
            st.markdown("**Splits**")
            st.dataframe(
                pd.DataFrame({"split": list(splits), "reviews": list(splits.values())}),
                hide_index=True,
            )
        if summary.get("holdout_films"):
            st.caption("Held-out films: " + ", ".join(summary["holdout_films"]))
    with st.expander("Films and input files"):
        st.dataframe(ctx.data.films, hide_index=True)
        if summary.get("files"):
            files = pd.DataFrame(summary["files"]).drop(columns=["path"], errors="ignore")
            files["rejected"] = files["rejected"].map(
                lambda r: ", ".join(f"{k}: {v}" for k, v in r.items()) if isinstance(r, dict) else r
            )
            st.dataframe(files, hide_index=True)


def comparison_table(models: dict[str, Any], split: str) -> pd.DataFrame:
    """One row per model: every scalar metric of ``split`` (best exact accuracy first)."""
    rows = []
    for name, result in models.items():
        metrics = result.get(split, {})
        if not metrics.get("n"):
            continue
        rows.append({"model": name, **{label: metrics.get(key) for key, label in COLUMNS.items()}})
    table = pd.DataFrame(rows, columns=["model", *COLUMNS.values()])
    table = table.dropna(axis=1, how="all")
    return table.sort_values("exact", ascending=False, kind="stable").reset_index(drop=True)


def show_comparison(table: pd.DataFrame) -> None:
    config = {
        label: st.column_config.NumberColumn(format="percent" if label in PERCENT else "%.3f")
        for label in table.columns
        if label not in ("model", "reviews")
    }
    st.dataframe(table, hide_index=True, column_config=config)


def confusion_grid(models: dict[str, Any], split: str, names: list[str], normalised: bool) -> None:
    key = "confusion_normalised" if normalised else "confusion"
    cols = st.columns(min(len(names), 3) or 1)
    for i, name in enumerate(names):
        matrix = models[name][split].get(key)
        if matrix is None:
            continue
        frame = pd.DataFrame(matrix, index=range(1, 6), columns=range(1, 6))
        cols[i % len(cols)].altair_chart(
            charts.confusion_heatmap(frame, normalised, title=name), width="content"
        )


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
    table = comparison_table(models, split)
    if table.empty:
        st.info(f"No model has {split} predictions in this evaluation.")
        return
    show_comparison(table)
    names = table["model"].tolist()

    st.markdown("**Exact and off-by-one accuracy**")
    st.altair_chart(charts.grouped_metric_bars(table, ["exact", "off-by-one"]), width="stretch")

    st.markdown("**Confusion matrices** (rows: true star, columns: predicted star)")
    normalised = st.toggle("normalise rows", value=True, key=f"norm:{evaluation}")
    shown = st.multiselect("models", names, default=names[:3], key=f"cm:{evaluation}")
    confusion_grid(models, split, shown, normalised)

    st.markdown("**True vs predicted star distribution**")
    pick = ctx.model if ctx.model in names else names[0]
    which = st.selectbox("model", names, index=names.index(pick), key=f"dist:{evaluation}")
    st.altair_chart(charts.true_vs_predicted(distributions(models, split, which)), width="stretch")
    per_class = models[which][split].get("per_class")
    if per_class:
        with st.expander(f"Precision, recall and F1 per star: {which}"):
            st.dataframe(
                pd.DataFrame(per_class).T.rename_axis("star").reset_index(), hide_index=True
            )

    st.markdown("**Calibration** (top-star confidence vs accuracy; probabilistic models)")
    calib = calibration_frame(models, split)
    if calib.empty:
        st.caption("No probabilistic model in this evaluation.")
        return
    st.altair_chart(charts.reliability(calib), width="stretch")
    with st.expander("Reliability table"):
        st.dataframe(calib, hide_index=True)


def models_section(ctx: common.Context) -> None:
    st.subheader("Models")
    evaluations = ctx.data.metrics.get("evaluations", {})
    if not evaluations:
        common.needs(
            "No model has been trained or evaluated in this run yet",
            f"douban train --run {ctx.name}",
        )
        return
    encoder = ctx.data.metrics.get("encoder", {})
    if encoder.get("name"):
        st.caption(
            f"Encoder `{encoder['name']}` (fingerprint {str(encoder.get('fingerprint'))[:12]}). "
            "Baselines and heads side by side; best exact accuracy first."
        )
    names = [e for e in ("random", "film_holdout", "cross_corpus") if e in evaluations]
    names += [e for e in evaluations if e not in names]
    for tab, evaluation in zip(st.tabs(names), names, strict=True):
        with tab:
            evaluation_section(ctx, evaluation, evaluations[evaluation])


ctx = common.current()
st.title("Overview")
st.caption(f"Run `{ctx.name}`")
dataset_section(ctx)
models_section(ctx)
