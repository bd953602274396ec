"""What the lab's numbers say, in numbers and one sentence: did fine-tuning change the top layers
most and leave the lower ones nearly unchanged (probes, separation and CKA per layer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.lab.inputs import FROZEN

NEARLY_UNCHANGED_CKA = 0.9  # linear CKA at or above this: a layer's geometry survived tuning


def findings(probes_doc: dict[str, Any], geometry_doc: dict[str, Any]) -> dict[str, Any]:
    """Per layer: probe accuracy, separation and CKA before vs after, and whether fine-tuning
    changed the top layers (last third) more than the lower ones (first third)."""
    tuned = geometry_doc.get("model")
    if not tuned or "cka" not in geometry_doc:
        return {"note": "no fine-tuned model: run `douban finetune` for the before/after view"}
    before, after = probes_doc["curves"][FROZEN], probes_doc["curves"][tuned]
    g_before, g_after = geometry_doc["layers"][FROZEN], geometry_doc["layers"][tuned]
    cka = geometry_doc["cka"]
    per_layer = [
        {
            "layer": la,
            "probe_frozen": before["accuracy"][la],
            "probe_finetuned": after["accuracy"][la],
            "separation_frozen": g_before[la]["ratio"],
            "separation_finetuned": g_after[la]["ratio"],
            "silhouette_frozen": g_before[la]["silhouette"],
            "silhouette_finetuned": g_after[la]["silhouette"],
            "cka": cka[la],
        }
        for la in range(len(cka))
    ]
    third = max(len(cka) // 3, 1)
    lower, top = per_layer[:third], per_layer[-third:]

    def mean(rows: list[dict[str, float]], key: Callable[[dict[str, float]], float]) -> float:
        return float(np.mean([key(r) for r in rows]))

    gain = lambda r: r["separation_finetuned"] - r["separation_frozen"]  # noqa: E731
    probe_gain = lambda r: r["probe_finetuned"] - r["probe_frozen"]  # noqa: E731
    summary = {
        "lower_layers": [r["layer"] for r in lower],
        "top_layers": [r["layer"] for r in top],
        "cka_lower": mean(lower, lambda r: r["cka"]),
        "cka_top": mean(top, lambda r: r["cka"]),
        "separation_gain_lower": mean(lower, gain),
        "separation_gain_top": mean(top, gain),
        "probe_gain_lower": mean(lower, probe_gain),
        "probe_gain_top": mean(top, probe_gain),
    }
    holds = (
        summary["cka_top"] < summary["cka_lower"]
        and summary["separation_gain_top"] > summary["separation_gain_lower"]
    )
    summary["top_layers_changed_most"] = bool(holds)
    summary["lower_layers_nearly_unchanged"] = summary["cka_lower"] >= NEARLY_UNCHANGED_CKA
    summary["statement"] = (
        f"Fine-tuning {'did' if holds else 'did not'} change the top layers most and "
        f"{'left' if summary['lower_layers_nearly_unchanged'] else 'did not leave'} the lower "
        f"ones nearly unchanged (CKA >= {NEARLY_UNCHANGED_CKA}): CKA before vs after is "
        f"{summary['cka_lower']:.2f} on layers {summary['lower_layers']} and "
        f"{summary['cka_top']:.2f} on layers {summary['top_layers']}; star separation (between/"
        f"within) changed by {summary['separation_gain_lower']:+.3f} on the lower and "
        f"{summary['separation_gain_top']:+.3f} on the top layers; probe accuracy by "
        f"{summary['probe_gain_lower']:+.3f} and {summary['probe_gain_top']:+.3f}."
    )
    return {"model": tuned, "per_layer": per_layer, **summary}
