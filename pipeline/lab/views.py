"""The lab's views, one function each (probes, geometry, projection, a word in context, attention
heads); each is computed once per fingerprint and cached (what they say: :mod:`.findings`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from pipeline.artifacts import cached_arrays, cached_json, write_arrays
from pipeline.lab import attention_heads, geometry, probes, projection, word_in_context
from pipeline.lab.inputs import FROZEN, Lab, pooled, save_json
from pipeline.modeling.metrics import STARS

log = logging.getLogger(__name__)
console = Console(stderr=True)

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
    if (cached := cached_arrays(path, fp)) is not None:
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
    write_arrays(path, fp, **out)
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
    if (doc := cached_json(json_path, fp)) is not None and cached_arrays(npz_path, fp) is not None:
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
    write_arrays(npz_path, fp, **arrays)
    save_json(json_path, doc)
    return doc


def _head_attention(lab: Lab, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    """The self-attentive head's per-token attention on ``rows``, from the run's predictions."""
    model = lab.run.attention_model(lab.run.default_model)
    if model is None:
        return None
    ids = lab.reviews["review_id"].to_numpy()[rows]
    lists = lab.run.prediction_lists(model, ids)
    if lists.empty:
        return None
    by_id = dict(zip(lists["review_id"], lists["attention"], strict=True))
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
    if (doc := cached_json(json_path, fp)) is not None and cached_arrays(npz_path, fp) is not None:
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
    write_arrays(npz_path, fp, **arrays)
    save_json(json_path, doc)
    return doc


HEAD_VIEW_EXAMPLES = 4
