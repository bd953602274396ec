"""What a run's saved models are and which to use, read from their JSON alone (no weights, no
torch), so :class:`pipeline.Run`, the CLI's model listing and the app stay light.

A model directory is a self-contained bundle: its config.json's ``scoring`` section
(:func:`scoring_spec`, written by the train stage) names the encoder (name, path, pooling,
prefix, fingerprint), ``max_length`` and token layers the features were extracted with, and the
segmenter prepare ran (film words + user dictionary lines). The two choices every surface must
make the same way live here, once: the run's default model (:func:`choose_default_model`) and
which head's attention explains a model's score (:func:`explaining_head`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.artifacts import MODEL_CONFIG as CONFIG
from pipeline.artifacts import read_json, read_manifest, write_json
from pipeline.config import ModelSet, RunPaths
from pipeline.data.text import USER_DICT, Segmenter
from pipeline.errors import CorruptArtifactError, StageMissingError, StaleArtifactError

SCORING = "scoring"  # config.json section that makes a model directory self-contained
# when a run records no default and has no validation figures: the first of these it has
FALLBACK_MODELS = ("ensemble_head_tfidf", "head_cls", "head_ord", "tfidf_lr")
# richest first: what a close call on validation goes to (it reads the review, explains itself
# with its own attention, and generalises: docs/heads.md)
RICHER_FIRST = (
    "ensemble_finetune_tfidf", "finetune_cls", "ensemble_head_tfidf", "head_cls", "head_ord",
    "head_reg", "pooled_lr_layers", "pooled_lr", "tfidf_lr", "tfidf_ridge", "majority",
)  # fmt: skip


def retrain_hint(model_dir: Path) -> str:
    """How to rebuild a model of the run that holds ``model_dir`` (<run>/trained/<gen>/models/
    <name>); --force, as its fingerprint says it is up to date."""
    run = next((p.parent.name for p in model_dir.parents if p.name == "trained"), None)
    stage = "finetune" if model_dir.name.startswith("finetune_") else "train"
    return f"retrain it: `douban {stage} --run {run} --force`" if run else "retrain it"


def list_models(models_dir: Path) -> list[str]:
    """Names of the saved models, in a stable order."""
    if not models_dir.exists():
        return []
    if not models_dir.is_dir():
        raise CorruptArtifactError(f"{models_dir} is not a folder", hint=retrain_hint(models_dir))
    return sorted(p.name for p in models_dir.iterdir() if (p / CONFIG).exists())


def segmenter_spec(paths: RunPaths) -> dict[str, Any]:
    """The segmenter prepare ran: the summary's film keys and the lines of its user dictionary
    (a copy in ``prepared/`` when there is one, else the file the prepare manifest names)."""
    summary = read_json(paths.summary) if paths.summary.exists() else {}
    copy = paths.prepared / USER_DICT
    recorded = ((read_manifest(paths.prepared) or {}).get("settings") or {}).get("user_dict")
    source = copy if copy.exists() else Path(recorded) if recorded else None
    if source is not None and not source.is_file():
        raise StaleArtifactError(
            f"run {paths.name} was prepared with the jieba user dictionary {source}, which no "
            "longer exists, so new text cannot be segmented as the reviews were",
            hint=f"put the file back, or re-run `douban prepare --run {paths.name}`",
        )
    lines = source.read_text(encoding="utf-8-sig").splitlines() if source else []
    return {
        "films": list(summary.get("films", [])),
        "names": list(summary.get("run_words", [])),
        "user_dict": [x for x in lines if x.strip()],
    }


def build_segmenter(spec: Mapping[str, Any]) -> Segmenter:
    """jieba exactly as the spec (:func:`segmenter_spec`) describes it."""
    return Segmenter(
        spec.get("films", []), user_lines=spec.get("user_dict", []), names=spec.get("names", [])
    )


def scoring_spec(
    paths: RunPaths, encoder: Mapping[str, Any] | None = None, max_length: int | None = None
) -> dict[str, Any]:
    """Everything a model of this run needs to score new text: the encoder, ``max_length`` and
    precision of the run's features manifest (a fine-tuned model passes its own encoder and
    length; a run without features records none: its text models read no encoder), the token
    layers stored and the segmenter prepare ran. The train and finetune stages store it in each
    model's config."""
    features = read_manifest(paths.features) or {}
    return {
        "encoder": dict(encoder if encoder is not None else features.get("encoder", {})),
        "max_length": int(max_length if max_length is not None else features.get("max_length", 0)),
        "token_layers": list(features.get("token_layers", [])),
        # the arithmetic the features were encoded with (int8 or fp32): scoring runs the same
        "precision": "fp32" if encoder is not None else features.get("precision", "fp32"),
        "segmenter": segmenter_spec(paths),
    }


def read_scoring_spec(config: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """The scoring section of a model's config; models saved before bundles had one must be
    retrained (their encoder and segmenter are not recorded with them)."""
    spec = config.get(SCORING)
    if not spec:
        raise CorruptArtifactError(
            f"model {model_name} carries no scoring spec (saved by an older version)",
            hint="retrain it with `douban train`",
        )
    return dict(spec)


def read_config(models_dir: Path, name: str) -> dict[str, Any]:
    """A saved model's config.json (no weights read)."""
    path = models_dir / name / CONFIG
    if not path.exists():
        raise StageMissingError(
            f"no trained model at {models_dir / name}", hint=retrain_hint(models_dir / name)
        )
    try:
        return read_json(path)
    except (OSError, ValueError) as err:
        raise CorruptArtifactError(
            f"model config {path} cannot be read ({err})", hint=retrain_hint(models_dir / name)
        ) from err


SELECT_BY = {"exact": "accuracy", "qwk": "qwk"}  # Settings.select_by -> star_metrics key
SELECT_BY_WORDS = {"exact": "best exact accuracy", "qwk": "best QWK"}


def best_on_validation(
    metrics: Mapping[str, Any],
    evaluation: str = "random",
    select_by: str = "exact",
    available: Collection[str] | None = None,
) -> dict[str, Any] | None:
    """The one rule for a run's default model: the best on the validation split of
    ``evaluation`` by ``select_by`` (exact accuracy or QWK), never a test figure; the majority
    baseline only when nothing else was evaluated. A close call goes to the richer model
    (:data:`RICHER_FIRST`): by exact accuracy, every model within one standard error of the
    best (``sqrt(p (1 - p) / n)`` on the validation reviews) is as good, and the richest of them
    is chosen; the record keeps the best, the margin and who was within it. The evaluate stage
    records the answer in metrics.json; readers take the record (:func:`choose_default_model`)."""
    metric = SELECT_BY[select_by]
    models = metrics.get("evaluations", {}).get(evaluation, {}).get("models", {})
    scores = {
        name: float(m["val"][metric])
        for name, m in sorted(models.items())
        if metric in m.get("val", {}) and m["val"].get("n", 1)
        and (available is None or name in available)
    }  # fmt: skip
    if len(scores) > 1:
        scores.pop("majority", None)
    if not scores:
        return None
    best = max(scores, key=scores.__getitem__)
    chosen = {"chosen_on": f"{evaluation}/val", "metric": select_by}
    n = int(models[best]["val"].get("n", 0))
    if select_by != "exact" or n == 0:
        return {"name": best, **chosen, "value": scores[best]}
    margin = (scores[best] * (1 - scores[best]) / n) ** 0.5
    close = [m for m, v in scores.items() if scores[best] - v <= margin]
    rank = {m: i for i, m in enumerate(RICHER_FIRST)}
    pick = min(close, key=lambda m: (rank.get(m, len(rank)), -scores[m]))
    return {
        "name": pick, **chosen, "value": scores[pick], "best": best, "best_value": scores[best],
        "margin": margin, "within_margin": sorted(close, key=lambda m: -scores[m]), "n": n,
    }  # fmt: skip


def describe_choice(record: Mapping[str, Any]) -> str:
    """How the recorded default model was chosen, in a sentence (the CLI and the app say it)."""
    rule = SELECT_BY_WORDS.get(record.get("metric", "exact"), "best exact accuracy")
    said = f"{rule} on {record.get('chosen_on', 'validation')}"
    best, name = record.get("best"), record.get("name")
    if not best or best == name:
        return said
    return (
        f"{said}, the richer model on a close call: {best} {record['best_value']:.1%}, {name} "
        f"{record['value']:.1%}, within one standard error (±{record['margin']:.1%} on "
        f"{record['n']:,} reviews)"
    )


def choose_default_model(metrics: Mapping[str, Any], available: Sequence[str]) -> str | None:
    """The run's one default model: the one the evaluate stage recorded, else (a run evaluated
    before it recorded one) :func:`best_on_validation` of its random evaluation, else the
    first of a fixed list."""
    recorded = (metrics.get("default_model") or {}).get("name")
    if recorded in available:
        return recorded
    best = best_on_validation(metrics, available=available)
    if best is not None:
        return best["name"]
    return next((m for m in FALLBACK_MODELS if m in available), available[0] if available else None)


def write_metrics(model_set: ModelSet, doc: dict[str, Any]) -> None:
    """metrics.json, then its ``default_model`` alone in default_model.json (read first by
    :func:`default_model_of`)."""
    write_json(model_set.metrics, doc)
    write_json(model_set.default_model, doc.get("default_model") or {})


def default_model_of(paths: RunPaths | ModelSet, available: Sequence[str]) -> str | None:
    """:func:`choose_default_model` of a model set (``RunPaths`` or ``ModelSet``), from
    default_model.json when it was written after metrics.json, else from metrics.json."""
    metrics, recorded = paths.metrics, paths.default_model
    try:
        fresh = recorded.stat().st_mtime_ns >= metrics.stat().st_mtime_ns
    except OSError:
        fresh = False
    if fresh:
        name = read_json(recorded).get("name")
        if name in available:
            return name
    return choose_default_model(read_json(metrics) if metrics.exists() else {}, available)


def explaining_head(
    model: str | None, with_attention: Collection[str], members: Sequence[str] = ()
) -> str | None:
    """The head whose attention explains ``model``'s score: the model itself when it has
    attention, else its head member (an ensemble), else head_cls, else the first head."""
    for name in (model, *members, "head_cls", *sorted(with_attention)):
        if name in with_attention:
            return name
    return None
