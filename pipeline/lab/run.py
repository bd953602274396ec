"""`douban lab`: compute every lab view of a run once and cache it in ``runs/<run>/lab/``.

Every view compares the frozen encoder with a fine-tuned one (``douban finetune``) on the same
reviews: ``lab.eval_reviews`` held-out test reviews (stratified by star) for every view, and
``lab.probe_train_reviews`` train reviews the probes learn from. Without a fine-tuned model the
frozen side is still computed. Each artifact carries the fingerprint of what produced it
(lab settings, prepared data, encoder, fine-tuned weights), so a second run only recomputes what
changed and the app reads finished numbers. The frozen encoder, its ``max_length`` and the
segmenter are the run's (its features manifest and prepare stage, read through
:class:`pipeline.Run`), not the current command's defaults, so a run featurised with another
encoder is compared against that encoder. Layout of ``runs/<run>/lab/``::

    pooled-<model>.npz   pooled sentence vectors per layer, eval and probe-train reviews
    probes.json          probe accuracy per layer, frozen and fine-tuned
    geometry.json        separation / silhouette per layer, CKA per layer and layer x layer
    projection.npz       PCA (and t-SNE) maps per layer, fine-tuned aligned onto frozen
    words.json/.npz      one word in many reviews: occurrences, similarities, maps
    heads.json/.npz      head pattern shares, top heads, encoder vs self-attentive head
    summary.json         what exists, timings, and ``findings`` (numbers per layer)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from pipeline.artifacts import cached_json, read_arrays, read_json
from pipeline.config import RunPaths, Settings
from pipeline.errors import InputError
from pipeline.lab.findings import findings
from pipeline.lab.inputs import Lab, open_lab, save_json
from pipeline.lab.views import (
    run_geometry,
    run_heads,
    run_probes,
    run_projection,
    run_words,
)

log = logging.getLogger(__name__)
console = Console(stderr=True)
PARTS = ("probes", "geometry", "projection", "words", "heads")

# ------------------------------------------------------------------------------ entry point

RUNNERS: dict[str, Callable[[Lab], Any]] = {
    "probes": run_probes,
    "geometry": run_geometry,
    "projection": run_projection,
    "words": run_words,
    "heads": run_heads,
}


def run_lab(
    settings: Settings, parts: Sequence[str] = PARTS, *, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Compute (or reuse) the requested lab parts and refresh ``lab/summary.json``."""
    unknown = [p for p in parts if p not in RUNNERS]
    if unknown:
        raise InputError(f"unknown lab part(s) {unknown}; choose from {list(RUNNERS)}")
    lab = open_lab(settings, progress=progress)
    if lab.model_name is None:
        console.print(
            "[yellow]lab[/]: no fine-tuned model in this run, computing the frozen side only; "
            f"run `douban finetune --run {settings.run_name}` for before vs after"
        )
    if force:
        for part in parts:
            for path in [*lab.paths.lab.glob(f"{part}.*"), *lab.paths.lab.glob("pooled-*.npz")]:
                path.unlink()
    summary_path = lab.path("summary.json")
    summary = read_json(summary_path) if summary_path.exists() else {}
    if summary.get("fingerprint") != lab.fingerprint:
        summary = {}  # another model, data or settings: earlier parts no longer apply
    summary.update({"run": lab.paths.name, "model": lab.model_name, "fingerprint": lab.fingerprint})
    timings = summary.setdefault("seconds", {})
    for part in parts:
        start = time.perf_counter()
        RUNNERS[part](lab)
        timings[part] = round(time.perf_counter() - start, 2)
        summary.setdefault("parts", {})[part] = lab.fp(part)
        console.print(f"[bold]lab[/]: {part} ready ({timings[part]:.1f} s)")
    probes_doc = cached_json(lab.path("probes.json"), lab.fp("probes"))
    geometry_doc = cached_json(lab.path("geometry.json"), lab.fp("geometry"))
    if probes_doc is not None and geometry_doc is not None:
        summary["findings"] = findings(probes_doc, geometry_doc)
        console.print(f"[bold]lab[/]: {summary['findings'].get('statement', '')}")
    summary["eval_reviews"] = len(lab.eval_rows)
    summary["probe_train_reviews"] = len(lab.train_rows)
    summary["settings"] = settings.lab.model_dump(mode="json")  # what this lab ran with
    summary["encoder"] = {**dataclasses.asdict(lab.spec), "max_length": lab.max_length}
    save_json(summary_path, summary)
    return summary


# ------------------------------------------------------------------------------ reading


def read_lab(paths: RunPaths) -> dict[str, Any]:
    """Everything ``douban lab`` cached for a run, as stored (JSON documents and arrays); views
    that were never computed are absent. Read-only and fast: what the app and reports call."""
    lab_dir = paths.lab
    out: dict[str, Any] = {}
    for name in ("summary", "probes", "geometry", "words", "heads"):
        if (lab_dir / f"{name}.json").exists():
            out[name] = read_json(lab_dir / f"{name}.json")
    for name in ("projection", "words", "heads"):
        path = lab_dir / f"{name}.npz"
        if path.exists():
            arrays = read_arrays(path)
            arrays.pop("fingerprint", None)
            out[f"{name}_arrays"] = arrays
    return out
