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
import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from rich.console import Console

from pipeline.artifacts import atomic_path, fingerprint, read_json, read_manifest, write_json
from pipeline.config import RunPaths, Settings
from pipeline.encoding.load import Encoder, EncoderSpec, load_encoder, pick_device, resolve_encoder
from pipeline.errors import InputError, ModelNotFoundError, StageMissingError
from pipeline.lab import attention_heads, geometry, probes, projection, word_in_context
from pipeline.modeling.batching import stratified_subset
from pipeline.modeling.metrics import STARS
from pipeline.modeling.sentence import tuned_encoder
from pipeline.run import Run

log = logging.getLogger(__name__)
console = Console(stderr=True)
LAB_VERSION = "lab-2"  # bump when a view changes meaning: every cached view recomputes
PARTS = ("probes", "geometry", "projection", "words", "heads")
FROZEN = "frozen"
HEAD_VIEW_EXAMPLES = 4
NEARLY_UNCHANGED_CKA = 0.9  # linear CKA at or above this: a layer's geometry survived tuning


# ------------------------------------------------------------------------------ cache helpers


def without_nan(obj: Any) -> Any:
    """NaN (an undefined mean, say) as JSON null, so every JSON reader accepts the file."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: without_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [without_nan(v) for v in obj]
    return obj


def save_json(path: Path, doc: dict[str, Any]) -> None:
    write_json(path, without_nan(doc))


def cached_json(path: Path, fp: str) -> dict[str, Any] | None:
    """The JSON artifact at ``path`` if it was produced from fingerprint ``fp``."""
    if not path.exists():
        return None
    doc = read_json(path)
    return doc if doc.get("fingerprint") == fp else None


def save_npz(path: Path, fp: str, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, fingerprint=np.array(fp), **arrays)


def cached_npz(path: Path, fp: str) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        if str(data["fingerprint"]) != fp:
            return None
        return {k: data[k] for k in data.files if k != "fingerprint"}


# ------------------------------------------------------------------------------ the lab's inputs


@dataclasses.dataclass
class Lab:
    """One run's lab: settings, the sampled reviews, and the two encoders (loaded on demand)."""

    settings: Settings
    run: Run
    spec: EncoderSpec  # the frozen encoder: the one the run's features were extracted with
    max_length: int  # the run's features.max_length
    reviews: pd.DataFrame
    eval_rows: np.ndarray
    train_rows: np.ndarray
    model_name: str | None  # the fine-tuned model compared with the frozen encoder
    tuned_fingerprint: str | None  # of that model's weights
    sample_fingerprint: str  # data, encoder and sampled reviews: what sentence vectors depend on
    fingerprint: str  # everything: what the views depend on
    progress: bool = True

    @property
    def paths(self) -> RunPaths:
        return self.settings.paths

    @property
    def models(self) -> list[str]:
        return [FROZEN] + ([self.model_name] if self.model_name else [])

    @property
    def eval_stars(self) -> np.ndarray:
        return self.reviews["star"].to_numpy(np.int64)[self.eval_rows]

    @functools.cached_property
    def device(self) -> Any:
        return pick_device(self.settings.lab.device)

    @functools.cached_property
    def frozen(self) -> Encoder:
        return load_encoder(self.spec, device=self.device)

    @functools.cached_property
    def finetuned(self) -> Encoder:
        if self.model_name is None:
            raise RuntimeError("this run has no fine-tuned model")
        return tuned_encoder(self.paths.model(self.model_name), device=self.device)

    def encoder(self, which: str) -> Encoder:
        return self.frozen if which == FROZEN else self.finetuned

    def texts(self, rows: Sequence[int]) -> list[str]:
        text = self.reviews["text"]
        return [str(text.iat[int(r)]) for r in rows]

    def fp(self, *parts: Any) -> str:
        return fingerprint(self.fingerprint, *parts)

    def path(self, name: str) -> Path:
        return self.paths.lab / name


def pick_finetuned(run: Run, requested: str | None) -> str | None:
    """The requested fine-tuned model, else the first of finetune_cls / _ord / _reg saved."""
    if requested is not None:
        if requested not in run.saved_models:
            raise ModelNotFoundError(
                f"run {run.name} has no model {requested!r}",
                hint=f"run `douban finetune --run {run.name}` first",
            )
        return requested
    for name in ("finetune_cls", "finetune_ord", "finetune_reg"):
        if name in run.saved_models:
            return name
    return None


def frozen_encoder(run: Run, settings: Settings) -> tuple[EncoderSpec, int]:
    """The run's encoder and ``max_length`` (its features manifest); the settings' only for a
    run without features, which records no encoder."""
    if run.manifest("features") is None:
        f = settings.features
        return resolve_encoder(f.encoder, pooling=f.pooling, prefix=f.prefix), f.max_length
    recorded = run.encoder_spec
    spec = resolve_encoder(recorded["name"], pooling=recorded["pooling"], prefix=recorded["prefix"])
    if spec.fingerprint != recorded["fingerprint"]:
        log.warning(
            "encoder %s here (fingerprint %s) differs from the one run %s was featurised with (%s)",
            recorded["name"], spec.fingerprint, run.name, recorded["fingerprint"],
        )  # fmt: skip
    return spec, int(recorded["max_length"])


def open_lab(settings: Settings, progress: bool = True) -> Lab:
    """Sample the lab's reviews and pin down what its artifacts depend on."""
    paths = settings.paths
    run = Run.open(paths.root)
    prepared = read_manifest(paths.prepared)
    if prepared is None or not paths.reviews.exists():
        raise StageMissingError(
            f"no prepared data in {paths.prepared}",
            hint=f"run `douban prepare --run {paths.name} --input <csv>` first",
        )
    reviews = pd.read_parquet(paths.reviews, columns=["review_id", "film", "star", "text", "split"])
    lab = settings.lab
    split = reviews["split"].to_numpy()
    stars = reviews["star"].to_numpy(np.int64)
    rows = {}
    for name, limit in (("test", lab.eval_reviews), ("train", lab.probe_train_reviews)):
        candidates = np.flatnonzero(split == name)
        if len(candidates) < 10:
            raise InputError(
                f"run {paths.name} has {len(candidates)} {name} reviews; the lab needs at least 10",
                hint="prepare more reviews",
            )
        rows[name] = candidates[stratified_subset(stars[candidates], limit, settings.seed)]
    model_name = pick_finetuned(run, lab.model)
    spec, max_length = frozen_encoder(run, settings)
    tuned_fp = None
    if model_name is not None:
        tuned_fp = run.model_config(model_name).get("fingerprint")
    sample_fp = fingerprint(
        LAB_VERSION,
        prepared["fingerprint"],
        spec.fingerprint,
        spec.pooling,
        spec.prefix,
        max_length,
        lab.eval_reviews,
        lab.probe_train_reviews,
        settings.seed,
    )
    fp = fingerprint(sample_fp, lab.model_dump(mode="json", exclude={"device"}), tuned_fp)
    return Lab(
        settings,
        run,
        spec,
        max_length,
        reviews,
        rows["test"],
        rows["train"],
        model_name,
        tuned_fp,
        sample_fp,
        fp,
        progress,
    )


# ------------------------------------------------------------------------------ pooled vectors


def _encode_pooled(lab: Lab, which: str, rows: np.ndarray) -> np.ndarray:
    from pipeline.encoding.encode import encode_texts

    encoder = lab.encoder(which)
    encoded = encode_texts(
        encoder,
        lab.texts(rows),
        token_layers=[-1],
        max_length=lab.max_length,
        token_budget=lab.settings.features.token_budget,
        progress=lab.progress,
    )
    kind = "pooled_cls" if encoder.spec.pooling == "cls" else "pooled_mean"
    return np.stack([getattr(e, kind) for e in encoded]).astype(np.float32)


def _store_pooled(lab: Lab, rows: np.ndarray) -> np.ndarray | None:
    """Frozen vectors straight from the run's feature store, when it holds this encoder's."""
    store = lab.run.feature_store
    if store is None:
        return None
    spec = lab.spec
    same = (
        store.encoder.get("fingerprint") == spec.fingerprint
        and store.encoder.get("prefix") == spec.prefix
        and store.max_length == lab.max_length
        and np.array_equal(store.review_ids, lab.reviews["review_id"].to_numpy())
    )
    if not same:
        return None
    kind = "cls" if spec.pooling == "cls" else "mean"
    pooled = store.pooled_all(kind)
    return np.asarray(pooled[np.sort(rows)], dtype=np.float32)[np.argsort(np.argsort(rows))]


def pooled(lab: Lab, which: str) -> dict[str, np.ndarray]:
    """``eval`` and ``train`` pooled vectors ``(N, L+1, d)`` of one model, cached."""
    path = lab.path(f"pooled-{which}.npz")
    tuned = None if which == FROZEN else lab.tuned_fingerprint
    fp = fingerprint(lab.sample_fingerprint, which, tuned)  # frozen vectors outlive a re-tune
    cached = cached_npz(path, fp)
    if cached is not None:
        return cached
    console.print(f"[bold]lab[/]: sentence vectors of the {which} encoder")
    out = {}
    for part, rows in (("eval", lab.eval_rows), ("train", lab.train_rows)):
        vectors = _store_pooled(lab, rows) if which == FROZEN else None
        out[part] = vectors if vectors is not None else _encode_pooled(lab, which, rows)
    save_npz(
        path,
        fp,
        eval=out["eval"].astype(np.float16),
        train=out["train"].astype(np.float16),
        eval_rows=lab.eval_rows,
        train_rows=lab.train_rows,
    )
    return out


# ------------------------------------------------------------------------------ the views


def run_probes(lab: Lab) -> dict[str, Any]:
    path, fp = lab.path("probes.json"), lab.fp("probes")
    if (doc := cached_json(path, fp)) is not None:
        return doc
    stars = lab.reviews["star"].to_numpy(np.int64)
    doc = {"fingerprint": fp, "model": lab.model_name, "curves": {}}
    for which in lab.models:
        vectors = pooled(lab, which)
        curve = probes.probe_layers(
            vectors["train"],
            stars[lab.train_rows],
            vectors["eval"],
            stars[lab.eval_rows],
            seed=lab.settings.seed,
            progress=lab.progress,
            desc=f"probes {which}",
        )
        doc["curves"][which] = curve.to_dict()
    save_json(path, doc)
    return doc


def run_geometry(lab: Lab) -> dict[str, Any]:
    path, fp = lab.path("geometry.json"), lab.fp("geometry")
    if (doc := cached_json(path, fp)) is not None:
        return doc
    doc = {"fingerprint": fp, "model": lab.model_name, "layers": {}}
    vectors = {which: pooled(lab, which)["eval"] for which in lab.models}
    for which, x in vectors.items():
        doc["layers"][which] = geometry.layer_geometry(x, lab.eval_stars, seed=lab.settings.seed)
    if lab.model_name:
        a, b = vectors[FROZEN], vectors[lab.model_name]
        doc["cka"] = geometry.cka_per_layer(a, b)
        doc["cka_matrix"] = geometry.cka_matrix(a, b).tolist()
    save_json(path, doc)
    return doc


def run_projection(lab: Lab) -> dict[str, np.ndarray]:
    path, fp = lab.path("projection.npz"), lab.fp("projection")
    if (cached := cached_npz(path, fp)) is not None:
        return cached
    methods = ("pca", "tsne") if lab.settings.lab.tsne else ("pca",)
    out: dict[str, np.ndarray] = {"review_id": lab.eval_rows, "star": lab.eval_stars}
    for method in methods:
        reference = None
        for which in lab.models:
            maps = projection.project_layers(
                pooled(lab, which)["eval"],
                method,
                reference=reference,
                seed=lab.settings.seed,
                progress=lab.progress,
                desc=f"{method} {which}",
            )
            reference = maps if reference is None else reference
            out[f"{method}_{'frozen' if which == FROZEN else 'finetuned'}"] = maps
    save_npz(path, fp, **out)
    return out


def _balanced(occurrences: list, stars: np.ndarray, limit: int, seed: int) -> list:
    """Up to ``limit`` occurrences, as even over the stars as the data allows."""
    rng = np.random.default_rng(seed)
    by_star = {s: [o for o in occurrences if stars[o.row] == s] for s in STARS}
    for items in by_star.values():
        rng.shuffle(items)
    picked: list = []
    while len(picked) < limit and any(by_star.values()):
        for s in STARS:
            if by_star[s] and len(picked) < limit:
                picked.append(by_star[s].pop())
    return sorted(picked, key=lambda o: o.row)


def _visible(lab: Lab, texts: list[str], occurrences: list) -> list:
    """The occurrences the encoder sees (not cut off by ``features.max_length``)."""
    from pipeline.encoding.encode import tokenize

    if not occurrences:
        return []
    rows = sorted({o.row for o in occurrences})
    tokenized = tokenize(lab.frozen, [texts[r] for r in rows], lab.max_length)
    offsets = dict(zip(rows, tokenized.offsets, strict=True))
    return [
        o
        for o in occurrences
        if len(word_in_context.token_positions(offsets[o.row], o.start, o.end))
    ]


def _word_layers(lab: Lab, which: str, texts: list[str], occ: list) -> np.ndarray:
    """``(n, L+1, d)`` contextual vectors of the word in each review, every layer."""
    from pipeline.encoding.encode import encode_texts

    encoder = lab.encoder(which)
    encoded = encode_texts(
        encoder,
        texts,
        token_layers=list(range(encoder.num_layers + 1)),
        max_length=lab.max_length,
        token_budget=lab.settings.features.token_budget,
    )
    return np.stack(
        [
            word_in_context.word_vector(e.token_states, e.offsets, o.start, o.end)
            for e, o in zip(encoded, occ, strict=True)
        ]
    )


def run_words(lab: Lab) -> dict[str, Any]:
    json_path, npz_path, fp = lab.path("words.json"), lab.path("words.npz"), lab.fp("words")
    if (doc := cached_json(json_path, fp)) is not None and cached_npz(npz_path, fp) is not None:
        return doc
    spans = lab.run.segmenter.spans
    test_rows = np.flatnonzero(lab.reviews["split"].to_numpy() == "test")
    texts = lab.texts(test_rows)
    stars_all = lab.reviews["star"].to_numpy(np.int64)[test_rows]
    doc: dict[str, Any] = {"fingerprint": fp, "model": lab.model_name, "words": []}
    arrays: dict[str, np.ndarray] = {}
    for k, word in enumerate(lab.settings.lab.words):
        found = _visible(lab, texts, word_in_context.find_occurrences(texts, word, spans))
        occ = _balanced(found, stars_all, lab.settings.lab.word_reviews, lab.settings.seed)
        entry: dict[str, Any] = {"word": word, "found": len(found), "used": len(occ)}
        doc["words"].append(entry)
        if len(occ) < 3:
            entry["note"] = f"only {len(occ)} test reviews contain {word!r} as a jieba word"
            continue
        console.print(f"[bold]lab[/]: {word} in {len(occ)} reviews")
        occ_texts = [texts[o.row] for o in occ]
        labels = stars_all[[o.row for o in occ]]
        entry["occurrences"] = [
            {
                "review_id": int(test_rows[o.row]),
                "start": o.start,
                "end": o.end,
                "star": int(labels[i]),
                "text": occ_texts[i],
            }
            for i, o in enumerate(occ)
        ]
        entry["polarity_gap"] = {}
        reference = None
        for which in lab.models:
            tag = "frozen" if which == FROZEN else "finetuned"
            vectors = _word_layers(lab, which, occ_texts, occ)  # (n, L+1, d)
            sims = np.stack(
                [word_in_context.cosine_matrix(vectors[:, la]) for la in range(vectors.shape[1])]
            )
            entry["polarity_gap"][tag] = [word_in_context.polarity_gap(s, labels) for s in sims]
            entry.setdefault("star_similarity", {})[tag] = [
                word_in_context.mean_similarity_by_label(s, labels, STARS).tolist() for s in sims
            ]
            maps = projection.project_layers(vectors, "pca", reference=reference, progress=False)
            reference = maps if reference is None else reference
            arrays[f"w{k}_{tag}_similarity"] = sims.astype(np.float16)
            arrays[f"w{k}_{tag}_pca"] = maps
        arrays[f"w{k}_star"] = labels
    save_npz(npz_path, fp, **arrays)
    save_json(json_path, doc)
    return doc


def _head_attention(lab: Lab, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    """The self-attentive head's per-token attention on ``rows`` from predictions.parquet."""
    if not lab.paths.predictions.exists():
        return None
    table = pq.read_table(
        lab.paths.predictions, columns=["model", "review_id", "attention", "evaluation"]
    ).to_pandas()
    model = lab.run.attention_model(lab.run.default_model)
    if model is None or model not in set(table["model"]):
        return None
    evaluation = table.loc[table["model"] == model, "evaluation"].iloc[0]
    sub = table[(table["model"] == model) & (table["evaluation"] == evaluation)]
    by_id = dict(zip(sub["review_id"], sub["attention"], strict=True))
    ids = lab.reviews["review_id"].to_numpy()[rows]
    return {"model": model, "weights": {int(i): by_id[i] for i in ids if by_id.get(i) is not None}}


def _compare_with_head(
    lab: Lab, rows: np.ndarray, attentions: list[attention_heads.ReviewAttention]
) -> dict[str, Any] | None:
    head = _head_attention(lab, rows)
    if head is None:
        return None
    ids = lab.reviews["review_id"].to_numpy()[rows]
    per_view: dict[str, list[dict[str, float]]] = {"cls": [], "mean": []}
    for rid, att in zip(ids, attentions, strict=True):
        weights = head["weights"].get(int(rid))
        if weights is None or len(weights) != att.attention.shape[-1]:
            continue  # the head saw other tokens (another max_length): not comparable
        text_tokens = att.offsets[:, 0] >= 0
        for view in per_view:
            ours = attention_heads.encoder_token_weights(att.attention, -1, view)
            per_view[view].append(attention_heads.compare_weights(ours, weights, text_tokens))
    out: dict[str, Any] = {"head_model": head["model"], "reviews": len(per_view["cls"])}
    for view, rows_ in per_view.items():
        values = pd.DataFrame(rows_)
        out[view] = {
            "spearman": float(values["spearman"].mean()) if len(values) else None,
            "top3_overlap": float(values["top_overlap"].mean()) if len(values) else None,
        }
    return out


def run_heads(lab: Lab) -> dict[str, Any]:
    json_path, npz_path, fp = lab.path("heads.json"), lab.path("heads.npz"), lab.fp("heads")
    if (doc := cached_json(json_path, fp)) is not None and cached_npz(npz_path, fp) is not None:
        return doc
    rng = np.random.default_rng(lab.settings.seed)  # eval rows are in file order, i.e. by film
    n = min(lab.settings.lab.head_reviews, len(lab.eval_rows))
    rows = np.sort(rng.choice(lab.eval_rows, size=n, replace=False))
    texts = lab.texts(rows)
    spans = lab.run.segmenter.spans
    doc: dict[str, Any] = {"fingerprint": fp, "model": lab.model_name, "reviews": len(rows)}
    arrays: dict[str, np.ndarray] = {"patterns": np.array(attention_heads.PATTERNS)}
    # head-view examples: reviews of median length (short enough to read, long enough to show)
    examples = np.argsort([len(t) for t in texts])[len(rows) // 2 :][:HEAD_VIEW_EXAMPLES]
    for which in lab.models:
        tag = "frozen" if which == FROZEN else "finetuned"
        console.print(f"[bold]lab[/]: attention heads of the {which} encoder")
        atts = attention_heads.encoder_attention(
            lab.encoder(which),
            texts,
            max_length=lab.max_length,
            progress=lab.progress,
        )
        shares = attention_heads.head_pattern_shares(atts)
        arrays[f"shares_{tag}"] = np.stack([shares[p] for p in attention_heads.PATTERNS])
        doc.setdefault("top_heads", {})[tag] = {
            p: attention_heads.top_heads(shares[p]) for p in attention_heads.PATTERNS
        }
        doc.setdefault("vs_attentive_head", {})[tag] = _compare_with_head(lab, rows, atts)
        for e, position in enumerate(examples):
            att = atts[position]
            words, groups = attention_heads.word_groups(
                att.offsets, att.tokens, spans(texts[position])
            )
            arrays[f"example{e}_{tag}"] = att.attention.astype(np.float16)
            arrays[f"example{e}_{tag}_words"] = attention_heads.word_level(
                att.attention, groups
            ).astype(np.float16)
            arrays[f"example{e}_tokens"] = np.array(att.tokens)
            arrays[f"example{e}_words"] = np.array(words)
        del atts
    doc["examples"] = [
        {"review_id": int(lab.reviews["review_id"].iat[int(rows[i])]), "text": texts[i]}
        for i in examples
    ]
    save_npz(npz_path, fp, **arrays)
    save_json(json_path, doc)
    return doc


# ------------------------------------------------------------------------------ findings


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
            with np.load(path, allow_pickle=False) as data:
                out[f"{name}_arrays"] = {k: data[k] for k in data.files if k != "fingerprint"}
    return out
