"""Matplotlib figures of the lab's cached results, for reports and notebooks (the app draws its
own interactive charts from the same data). Every function takes what
:func:`pipeline.lab.run.read_lab` returns and gives back a Figure (no pyplot state: save it with
``fig.savefig``); nothing here computes a result."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pipeline.fonts import use_cjk_font
from pipeline.lab.attention_heads import PATTERNS

STAR_COLOURS = ["#d7191c", "#fdae61", "#bdbdbd", "#a6d96a", "#1a9641"]  # 1 .. 5 stars


def probe_curves(lab: dict[str, Any]) -> Figure:
    """Held-out probe accuracy per layer, frozen vs fine-tuned, with the majority baseline."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    curves = lab["probes"]["curves"]
    for name, curve in curves.items():
        ax.plot(curve["accuracy"], marker="o", label=name)
    first = next(iter(curves.values()))
    ax.axhline(first["majority"], color="grey", linestyle=":", label="majority")
    ax.set(xlabel="layer (0 = embeddings)", ylabel="probe accuracy", title="Linear star probe")
    ax.legend()
    fig.tight_layout()
    return fig


def geometry_curves(lab: dict[str, Any]) -> Figure:
    """Star separation per layer for both models, and CKA before vs after."""
    geo = lab["geometry"]
    fig = Figure(figsize=(10, 3.5))
    axes = fig.subplots(1, 2)
    for name, rows in geo["layers"].items():
        axes[0].plot([r["ratio"] for r in rows], marker="o", label=name)
    axes[0].set(xlabel="layer", ylabel="between / within", title="Star separation")
    axes[0].legend()
    if "cka" in geo:
        axes[1].plot(geo["cka"], marker="o", color="black")
        axes[1].set_ylim(0, 1.05)
    axes[1].set(xlabel="layer", ylabel="linear CKA", title="Frozen vs fine-tuned, same layer")
    fig.tight_layout()
    return fig


def projection_grid(lab: dict[str, Any], method: str = "pca") -> Figure:
    """Every layer's map, frozen (top row) and fine-tuned (bottom row), coloured by star."""
    arrays = lab["projection_arrays"]
    names = [k for k in (f"{method}_frozen", f"{method}_finetuned") if k in arrays]
    layers = arrays[names[0]].shape[0]
    fig = Figure(figsize=(1.6 * layers, 1.7 * len(names)))
    axes = fig.subplots(len(names), layers, squeeze=False)
    colours = np.array(STAR_COLOURS)[arrays["star"].astype(int) - 1]
    for r, name in enumerate(names):
        for la in range(layers):
            ax = axes[r, la]
            xy = arrays[name][la]
            ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=2, linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"L{la}", fontsize=8)
        axes[r, 0].set_ylabel(name.split("_", 1)[1], fontsize=8)
    fig.tight_layout()
    return fig


def head_patterns(lab: dict[str, Any], which: str = "frozen") -> Figure:
    """Layer x head share of attention per pattern (next, previous, self, first, last, punct)."""
    shares = lab["heads_arrays"][f"shares_{which}"]
    fig = Figure(figsize=(3 * len(PATTERNS), 3), layout="constrained")
    axes = fig.subplots(1, len(PATTERNS))
    for ax, pattern, values in zip(axes, PATTERNS, shares, strict=True):
        im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.set(title=pattern, xlabel="head", ylabel="layer")
    fig.colorbar(im, ax=axes, shrink=0.8)
    return fig


def word_similarity(lab: dict[str, Any], k: int = 0, layer: int = -1) -> Figure:
    """One word's star x star mean cosine similarity, frozen vs fine-tuned, at one layer."""
    use_cjk_font()
    entry = lab["words"]["words"][k]
    tables = entry.get("star_similarity", {})
    fig = Figure(figsize=(4 * max(len(tables), 1), 3.5))
    axes = fig.subplots(1, max(len(tables), 1), squeeze=False)
    for ax, (name, per_layer) in zip(axes[0], tables.items(), strict=False):
        im = ax.imshow(np.array(per_layer[layer], dtype=float), cmap="magma", origin="lower")
        ax.set(title=f"{entry['word']}: {name}", xlabel="star", ylabel="star")
        ax.set_xticks(range(5), labels=range(1, 6))
        ax.set_yticks(range(5), labels=range(1, 6))
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig
