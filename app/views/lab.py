"""Model lab: what fine-tuning changes inside the encoder, layer by layer, from the results
`douban lab` cached in runs/<run>/lab/ (pipeline.lab.run.read_lab). Nothing is computed here."""

from __future__ import annotations

from typing import Any

import common
import numpy as np
import pandas as pd
import streamlit as st

import pipeline
from pipeline import charts

SECTIONS = ["Findings", "Probes", "Geometry", "Projections", "Word in context", "Attention heads"]
WHAT = {
    "Probes": "a linear probe per layer: how much star information each layer makes linearly "
    "readable, frozen vs fine-tuned encoder",
    "Geometry": "how far apart the five stars sit per layer (separation, silhouette) and how "
    "similar the frozen and fine-tuned layers are (linear CKA)",
    "Projections": "PCA / t-SNE maps of the review vectors per layer, frozen and fine-tuned side "
    "by side",
    "Word in context": "one word (好看, 失望, …) in many reviews: does its vector depend on the "
    "review's star, layer by layer?",
    "Attention heads": "what the encoder's own heads attend to (next / previous token, </s>, "
    "punctuation) and a head view of single reviews",
}


def read(run: Any) -> dict[str, Any]:
    return pipeline.read_lab(run.paths)


def tag_label(lab: dict[str, Any], tag: str) -> str:
    """``frozen`` / ``finetuned`` (or the fine-tuned model's own name) for legends."""
    model = lab.get("summary", {}).get("model")
    return "frozen" if tag == "frozen" else f"fine-tuned ({model})" if model else "fine-tuned"


def per_layer(values: dict[str, list[float]], name: str) -> pd.DataFrame:
    """Long frame ``layer, encoder, <name>`` of per-layer curves keyed by encoder."""
    return pd.DataFrame(
        [
            {"layer": i, "encoder": enc, name: v}
            for enc, vs in values.items()
            for i, v in enumerate(vs)
        ]
    )


def empty_page(ctx: common.Context) -> None:
    common.needs(
        f"No lab results for run {ctx.name} yet. Compute them (minutes on a CPU; fine-tune "
        "first for the before/after comparison) with",
        pipeline.douban_command("finetune", ctx.name)
        + "  # optional\n"
        + pipeline.douban_command("lab all", ctx.name),
    )
    st.markdown("**What this page will hold**")
    st.markdown("\n".join(f"- **{name}**: {what}" for name, what in WHAT.items()))


def findings(lab: dict[str, Any]) -> None:
    summary = lab.get("summary", {})
    found = summary.get("findings", {})
    st.caption(
        f"{summary.get('eval_reviews', '?')} held-out reviews; probes trained on "
        f"{summary.get('probe_train_reviews', '?')} train reviews."
    )
    if "statement" in found:
        st.success(found["statement"])
        common.table(pd.DataFrame(found["per_layer"]))
    else:
        st.info(found.get("note", "Findings need the probes and geometry parts."))
        frozen = frozen_layers(lab)
        if frozen is not None:
            st.markdown("**The frozen encoder, layer by layer**")
            common.table(frozen)
    if summary.get("seconds"):
        st.caption(
            "computed in " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())
        )


def frozen_layers(lab: dict[str, Any]) -> pd.DataFrame | None:
    """Probe accuracy, star separation and silhouette per layer of the frozen encoder."""
    probes, geometry = lab.get("probes"), lab.get("geometry")
    if probes is None or geometry is None:
        return None
    rows = geometry["layers"]["frozen"]
    return pd.DataFrame(
        {
            "layer": range(len(rows)),
            "probe accuracy": probes["curves"]["frozen"]["accuracy"],
            "separation": [r["ratio"] for r in rows],
            "silhouette": [r["silhouette"] for r in rows],
        }
    )


def probes_view(lab: dict[str, Any]) -> None:
    doc = lab.get("probes")
    if doc is None:
        return missing("probes")
    metric = (
        st.segmented_control(
            "metric", ["accuracy", "macro_f1", "off_by_one"], default="accuracy", key="probe_metric"
        )
        or "accuracy"
    )
    curves = doc["curves"]
    frame = per_layer(
        {
            ("frozen" if w == "frozen" else f"fine-tuned ({w})"): c[metric]
            for w, c in curves.items()
        },
        metric,
    )
    chart = charts.line(
        frame,
        "layer:O",
        f"{metric}:Q",
        color="encoder:N",
        y_format=".0%",
        title=f"probe {metric} per layer (0 = embeddings)",
    )
    majority = next(iter(curves.values()))["majority"]
    if metric == "accuracy":
        chart = chart + charts.hline(majority)
    st.altair_chart(chart, width="stretch")
    st.caption(f"Dashed: always the most frequent star ({majority:.0%}).")


def geometry_view(lab: dict[str, Any]) -> None:
    doc = lab.get("geometry")
    if doc is None:
        return missing("geometry")
    layers = doc["layers"]
    explained = {
        "ratio": "Separation: the spread of the five stars' centres over the spread of reviews "
        "around their own star's centre (higher: stars sit further apart).",
        "silhouette": "Silhouette: how much closer a review is to reviews of its own star than "
        "to those of the nearest other star, from -1 to 1 (0: no grouping by star).",
    }
    for key, title in (
        ("ratio", "star separation (between / within)"),
        ("silhouette", "silhouette by star"),
    ):
        frame = per_layer(
            {
                tag_label(lab, "frozen" if w == "frozen" else "finetuned"): [
                    row[key] for row in rows
                ]
                for w, rows in layers.items()
            },
            key,
        )
        st.altair_chart(
            charts.line(frame, "layer:O", f"{key}:Q", title=title, color="encoder:N"),
            width="stretch",
        )
        st.caption(explained[key])
    if "cka" not in doc:
        st.caption("CKA compares the frozen and the fine-tuned encoder: fine-tune first.")
        return
    cka = pd.DataFrame({"layer": range(len(doc["cka"])), "cka": doc["cka"]})
    st.altair_chart(
        charts.line(cka, "layer:O", "cka:Q", title="linear CKA, frozen vs fine-tuned, same layer"),
        width="stretch",
    )
    st.caption(
        "CKA (centred kernel alignment): how alike two layers' representations of the same "
        "reviews are, from 0 to 1 (1: the same up to rotation and scale)."
    )
    matrix = np.asarray(doc["cka_matrix"])
    long = pd.DataFrame(
        [
            {"frozen layer": i, "fine-tuned layer": j, "cka": matrix[i, j]}
            for i in range(matrix.shape[0])
            for j in range(matrix.shape[1])
        ]
    )
    st.altair_chart(
        charts.heatmap(
            long, "fine-tuned layer", "frozen layer", "cka", title="CKA, every layer pair"
        ).properties(height=320),
        width="stretch",
    )


def projections_view(ctx: common.Context, lab: dict[str, Any]) -> None:
    arrays = lab.get("projection_arrays")
    if arrays is None:
        return missing("projection")
    methods = [m for m in ("pca", "tsne") if f"{m}_frozen" in arrays]
    method = (
        st.segmented_control("method", methods, default=methods[0], key="proj_method") or methods[0]
    )
    n_layers = arrays[f"{method}_frozen"].shape[0]
    layer = st.slider("layer", 0, n_layers - 1, n_layers - 1, key="proj_layer")
    reviews = ctx.data.reviews.set_index("review_id")
    ids = arrays["review_id"]
    base = pd.DataFrame(
        {
            "star": arrays["star"],
            "review": reviews["text"].reindex(ids).str.slice(0, 120).to_numpy(),
        }
    )
    tags = [t for t in ("frozen", "finetuned") if f"{method}_{t}" in arrays]
    for col, tag in zip(st.columns(len(tags)), tags, strict=True):
        xy = arrays[f"{method}_{tag}"][layer]
        points = base.assign(x=xy[:, 0], y=xy[:, 1])
        col.markdown(f"**{tag_label(lab, tag)}**, layer {layer}")
        col.altair_chart(charts.scatter_map(points), width="stretch")


def words_view(lab: dict[str, Any]) -> None:
    doc, arrays = lab.get("words"), lab.get("words_arrays")
    if doc is None or arrays is None:
        return missing("word")
    entries = doc["words"]
    if not entries:
        st.info("No word was followed: `douban lab word --word 好看 --run RUN`.")
        return
    k = st.selectbox(
        "word",
        range(len(entries)),
        key="lab_word",
        format_func=lambda i: f"{entries[i]['word']} ({entries[i]['used']} reviews)",
    )
    entry = entries[k]
    if "occurrences" not in entry:
        st.info(entry.get("note", "too few occurrences"))
        return
    gaps = {tag_label(lab, tag): v for tag, v in entry["polarity_gap"].items()}
    st.altair_chart(
        charts.line(
            per_layer(gaps, "polarity gap"),
            "layer:O",
            "polarity gap:Q",
            color="encoder:N",
            title=f"does {entry['word']!r} in a 1-2★ review differ from "
            "4-5★? (similarity within minus across)",
        ),
        width="stretch",
    )
    tags = [t for t in ("frozen", "finetuned") if f"w{k}_{t}_pca" in arrays]
    n_layers = arrays[f"w{k}_{tags[0]}_pca"].shape[0]
    layer = st.slider("layer", 0, n_layers - 1, n_layers - 1, key="word_layer")
    occ = pd.DataFrame(entry["occurrences"])
    occ["review"] = occ["text"].str.slice(0, 120)
    for col, tag in zip(st.columns(len(tags)), tags, strict=True):
        xy = arrays[f"w{k}_{tag}_pca"][layer]
        col.markdown(f"**{tag_label(lab, tag)}**, layer {layer}")
        col.altair_chart(
            charts.scatter_map(occ.assign(x=xy[:, 0], y=xy[:, 1])),
            width="stretch",
        )
        sim = np.asarray(entry["star_similarity"][tag][layer])
        long = pd.DataFrame(
            [
                {"star a": a + 1, "star b": b + 1, "similarity": sim[a, b]}
                for a in range(sim.shape[0])
                for b in range(sim.shape[1])
            ]
        )
        col.altair_chart(
            charts.heatmap(
                long, "star b", "star a", "similarity", title="mean cosine similarity by star"
            ),
            width="stretch",
        )


def heads_view(lab: dict[str, Any]) -> None:
    doc, arrays = lab.get("heads"), lab.get("heads_arrays")
    if doc is None or arrays is None:
        return missing("heads")
    patterns = [str(p) for p in arrays["patterns"]]
    pattern = (
        st.segmented_control("pattern", patterns, default=patterns[0], key="head_pattern")
        or patterns[0]
    )
    p = patterns.index(pattern)
    tags = [t for t in ("frozen", "finetuned") if f"shares_{t}" in arrays]
    st.caption(
        f"Share of attention each head gives to the {pattern} token, averaged over "
        f"{doc.get('reviews', '?')} reviews."
    )
    for col, tag in zip(st.columns(len(tags)), tags, strict=True):
        shares = arrays[f"shares_{tag}"][p]
        long = pd.DataFrame(
            [
                {"layer": la + 1, "head": h, "share": shares[la, h]}
                for la in range(shares.shape[0])
                for h in range(shares.shape[1])
            ]
        )
        col.altair_chart(
            charts.heatmap(long, "head", "layer", "share", title=tag_label(lab, tag)),
            width="stretch",
        )
        col.dataframe(
            pd.DataFrame(doc["top_heads"][tag][pattern]), hide_index=True, placeholder="-"
        )
    versus = {tag: v for tag, v in doc.get("vs_attentive_head", {}).items() if v}
    if versus:
        st.markdown("**Encoder attention vs the self-attentive head** (same reviews, text tokens)")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "encoder": tag_label(lab, tag),
                        "view": view,
                        "head model": v["head_model"],
                        "reviews": v["reviews"],
                        **v[view],
                    }
                    for tag, v in versus.items()
                    for view in ("cls", "mean")
                ]
            ),
            hide_index=True,
            placeholder="-",
        )
    head_view(lab, arrays, tags)


def head_view(lab: dict[str, Any], arrays: dict[str, np.ndarray], tags: list[str]) -> None:
    examples = lab["heads"].get("examples", [])
    if not examples:
        return
    st.markdown("**Head view**: one review, one layer and head; row = the token attending")
    e = st.selectbox(
        "review",
        range(len(examples)),
        key="head_example",
        format_func=lambda i: examples[i]["text"][:60],
    )
    cols = st.columns(4)
    tag = cols[0].selectbox(
        "encoder", tags, format_func=lambda t: tag_label(lab, t), key="head_tag"
    )
    level = (
        cols[1].segmented_control("unit", ["words", "tokens"], default="words", key="head_unit")
        or "words"
    )
    maps = arrays[f"example{e}_{tag}_words" if level == "words" else f"example{e}_{tag}"]
    labels = [str(t) for t in arrays[f"example{e}_{level}"]]
    layer = cols[2].slider("layer", 1, maps.shape[0], maps.shape[0], key="head_layer")
    head = cols[3].slider("head", 0, maps.shape[1] - 1, 0, key="head_head")
    att = np.asarray(maps[layer - 1, head], dtype=np.float32)
    long = pd.DataFrame(
        [
            {
                "from": f"{i:02d} {labels[i]}",
                "to": f"{j:02d} {labels[j]}",
                "attention": float(att[i, j]),
            }
            for i in range(len(labels))
            for j in range(len(labels))
        ]
    )
    st.altair_chart(
        charts.heatmap(long, "to", "from", "attention", scheme="oranges", cell=22),
        width="content",
    )


def missing(command: str) -> None:
    common.needs(
        "This part was not computed",
        pipeline.douban_command(f"lab {command}", common.current().name),
    )


ctx = common.current()
st.title("Model lab")
# reading needs pipeline.lab (torch and transformers): skip the import when there is nothing
lab = common.cached(read, ctx) if any(ctx.data.paths.lab.glob("*.json")) else {}
if not lab:
    empty_page(ctx)
else:
    finetuned = lab.get("summary", {}).get("model")
    st.caption(
        common.plain(
            f"Run {ctx.name} · fine-tuned model: "
            + (common.model_label(finetuned) if finetuned else "none (frozen encoder only)")
        )
    )
    tabs = st.tabs(SECTIONS, key="lab_section", on_change="rerun")
    views = {
        "Findings": lambda: findings(lab),
        "Probes": lambda: probes_view(lab),
        "Geometry": lambda: geometry_view(lab),
        "Projections": lambda: projections_view(ctx, lab),
        "Word in context": lambda: words_view(lab),
        "Attention heads": lambda: heads_view(lab),
    }
    for tab, name in zip(tabs, SECTIONS, strict=True):
        if tab.open:
            with tab:
                views[name]()
