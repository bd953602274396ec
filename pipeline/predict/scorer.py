"""Scoring new reviews with a trained run: `douban score`, ``pipeline.score(...)`` and the app.

A :class:`Scorer` keeps the run's encoder and models loaded. Per review it reports the predicted
star and the probability of each star (the chosen model), the expected star, the regression head's
value, and the words the attention head looked at most: token attention summed over hops, spread
evenly over each token's characters, then summed over each jieba word's characters.

Bad input never raises: empty, whitespace-only or cleaned-away text gets ``error``; text without
Chinese characters (English, emoji-only) is scored with a warning; text longer than the encoder's
``max_length`` tokens is truncated with a warning; a file row that is not valid UTF-8 gets
``error``. Batch scoring returns exactly one record per input, in order.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import read_json
from pipeline.config import RunPaths, Settings, latest_run
from pipeline.errors import StageMissingError
from pipeline.modeling.bundle import list_models, load_star_model, needs_tokens
from pipeline.modeling.inputs import EncodedSource, Predictions

log = logging.getLogger(__name__)

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)
MAX_CHARS = 5_000  # characters kept before tokenizing; far beyond any encoder's max_length
TOP_WORDS = 8
SCORE_TOKEN_BUDGET = 2_048  # padded tokens per encoder batch: small, length-sorted batches on CPU
DEFAULT_MODELS = ("ensemble_head_tfidf", "head_cls", "head_ord", "tfidf_lr")
TEXT_COLUMNS = ("comment", "text", "review", "content")
FIELDS = (
    "row", "text", "pred_star", "probs", "expected_star", "regression", "model", "top_words",
    "warnings", "error",
)  # fmt: skip


class NoTrainedRunError(StageMissingError):
    """There is no run with trained models to score with."""


def find_trained_run(runs_dir: Path) -> Path:
    """The latest run (``config.latest_run``) if it has models, else the newest run that does."""
    latest = latest_run(runs_dir)
    if latest is not None and list_models(RunPaths(latest).models):
        return latest
    trained = [p for p in runs_dir.glob("*") if list_models(RunPaths(p).models)]
    if not trained:
        raise NoTrainedRunError(
            f"no trained run in {runs_dir}. Train one first: `douban prepare --input reviews.csv "
            "--run NAME`, then `douban features --run NAME` and `douban train --run NAME`"
        )
    return max(trained, key=lambda p: (p / "models").stat().st_mtime)


def _default_model(paths: RunPaths, available: list[str]) -> str:
    """Best validation accuracy among the probabilistic models (never chosen on test);
    otherwise the first of :data:`DEFAULT_MODELS` that exists."""
    if paths.metrics.exists():
        evaluations = read_json(paths.metrics).get("evaluations", {})
        for evaluation in ("random", "film_holdout"):
            models = evaluations.get(evaluation, {}).get("models", {})
            scored = {
                m: v["val"]["accuracy"]
                for m, v in models.items()
                if m in available and m != "majority" and "ece" in v.get("val", {})
            }
            if scored:
                return max(scored, key=scored.__getitem__)
    for name in DEFAULT_MODELS:
        if name in available:
            return name
    return available[0]


@dataclass
class _Prepared:
    """One input after cleaning: ``text`` is None when it cannot be scored (see ``error``)."""

    original: str
    text: str | None
    warnings: list[str]
    error: str | None = None


def _prepare(raw: Any) -> _Prepared:
    from pipeline.data.text import clean_text

    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return _Prepared("", None, [], "empty review")
    original = str(raw)
    if _SURROGATE.search(original):
        return _Prepared(_SURROGATE.sub("\ufffd", original), None, [], "invalid UTF-8")
    if not original.strip():
        return _Prepared(original, None, [], "empty review")
    warnings = []
    if len(original) > MAX_CHARS:
        warnings.append(f"review has {len(original):,} characters; only the start is scored")
        original_for_model = original[:MAX_CHARS]
    else:
        original_for_model = original
    text = clean_text(original_for_model)
    if not text:
        return _Prepared(original, None, [], "no text left after cleaning (only markup or URLs)")
    if not _HAN.search(text):
        warnings.append("no Chinese characters: the models were trained on Chinese reviews")
    return _Prepared(original, text, warnings)


def word_attention(
    text: str, offsets: np.ndarray, attention: np.ndarray, spans: Sequence[tuple[str, int, int]]
) -> list[tuple[str, int, int, float]]:
    """Attention per jieba word, normalised to sum to 1 over the words.

    Each token's weight (summed over hops) is spread evenly over its characters; a word gets the
    sum over its characters. Special and prefix tokens (offset -1) carry no characters.
    """
    chars = np.zeros(len(text), dtype=np.float64)
    for (start, end), weight in zip(offsets, attention, strict=False):
        if start < 0 or end <= start:
            continue
        chars[start:end] += weight / (end - start)
    words = [(w, s, e, float(chars[s:e].sum())) for w, s, e in spans]
    total = sum(x[3] for x in words)
    return [(w, s, e, a / total if total > 0 else 0.0) for w, s, e, a in words]


class Scorer:
    """A run's encoder and models, loaded once; ``score`` and ``explain`` new texts."""

    def __init__(self, run_dir: Path, model: str | None = None, device: str = "cpu") -> None:
        from pipeline.data.text import Segmenter
        from pipeline.encoding.load import load_encoder
        from pipeline.features.store import FeatureStore

        self.paths = RunPaths(Path(run_dir))
        available = list_models(self.paths.models)
        if not available:
            raise NoTrainedRunError(
                f"run {self.paths.name} has no trained models: run `douban train --run "
                f"{self.paths.name}`"
            )
        self.model_name = model or _default_model(self.paths, available)
        if self.model_name not in available:
            raise ValueError(
                f"run {self.paths.name} has no model {self.model_name!r}; it has {available}"
            )
        store = FeatureStore.open(self.paths.features)
        spec = store.encoder  # resolved afresh: the run may come from another machine's cache
        self.encoder = load_encoder(
            spec["name"], device=device, pooling=spec["pooling"], prefix=spec["prefix"]
        )
        self.fingerprint = self.encoder.spec.fingerprint
        self.max_length = store.max_length
        load = lambda name: load_star_model(self.paths.models, name, self.fingerprint)  # noqa: E731
        self.model = load(self.model_name)
        self.attention_model = self._attention_model(available, load)
        self.regression_model = load("head_reg") if "head_reg" in available else None
        layers = set()
        for m in (self.model, self.attention_model, self.regression_model):
            layers |= set(_token_layers(m))
        self.token_layers = sorted(layers) or [self.encoder.num_layers]
        summary = read_json(self.paths.summary) if self.paths.summary.exists() else {}
        self.segmenter = Segmenter(summary.get("films", []))

    @classmethod
    def load(cls, run_dir: Path, model: str | None = None, device: str = "cpu") -> Scorer:
        return cls(run_dir, model, device)

    def _attention_model(self, available: list[str], load: Any) -> Any:
        """The self-attentive head whose attention explains a score, and its name (the chosen
        model, its head member, else head_cls; None when the run has no head)."""
        if getattr(self.model, "kind", None) == "head":
            self.attention_model_name: str | None = self.model_name
            return self.model
        if getattr(self.model, "kind", None) == "ensemble":
            for name, member in self.model.members.items():
                if getattr(member, "kind", None) == "head":
                    self.attention_model_name = name
                    return member
        self.attention_model_name = "head_cls" if "head_cls" in available else None
        return load("head_cls") if self.attention_model_name else None

    # ----------------------------------------------------------------------------- scoring

    def _encode(self, texts: list[str]) -> tuple[EncodedSource, list[bool]]:
        """Encode and segment; flag texts cut at ``max_length`` tokens (the TF-IDF side of an
        ensemble still reads the whole text, exactly as in evaluation)."""
        from pipeline.encoding.encode import encode_texts

        encoded = encode_texts(
            self.encoder,
            texts,
            token_layers=self.token_layers,
            max_length=self.max_length,
            token_budget=max(SCORE_TOKEN_BUDGET, self.max_length),
        )
        truncated = [
            len(enc.input_ids) >= self.max_length
            and int(enc.offsets[:, 1].max(initial=0)) < len(text.rstrip())
            for text, enc in zip(texts, encoded, strict=True)
        ]
        tokens = [self.segmenter.tokens(t) for t in texts]
        return EncodedSource(texts, encoded, tokens, self.token_layers, self.fingerprint), truncated

    def _predict(
        self, texts: list[str]
    ) -> tuple[dict[str, Predictions | None], EncodedSource, list[bool]]:
        source, truncated = self._encode(texts)
        rows = list(range(len(texts)))
        out: dict[str, Predictions | None] = {"model": self.model.predict(source, rows)}
        out["attention"] = None
        if self.attention_model is not None:
            has = out["model"].attention is not None and self.attention_model is self.model
            out["attention"] = out["model"] if has else self.attention_model.predict(source, rows)
        out["regression"] = (
            self.regression_model.predict(source, rows) if self.regression_model else None
        )
        return out, source, truncated

    def score(self, texts: Iterable[Any], batch_size: int = 64) -> list[dict[str, Any]]:
        """One record per input text, in order (see :data:`FIELDS`)."""
        prepared = [_prepare(t) for t in texts]
        records: list[dict[str, Any]] = [{} for _ in prepared]
        ok = [i for i, p in enumerate(prepared) if p.text is not None]
        for start in range(0, len(ok), batch_size):
            idx = ok[start : start + batch_size]
            preds, source, truncated = self._predict([prepared[i].text for i in idx])
            for j, i in enumerate(idx):
                records[i] = self._record(prepared[i], preds, source, j, truncated[j])
        for i, p in enumerate(prepared):
            if p.text is None:
                records[i] = self._error_record(p)
        for i, r in enumerate(records):
            r["row"] = i
        return records

    def _record(
        self,
        prep: _Prepared,
        preds: dict[str, Predictions | None],
        source: EncodedSource,
        j: int,
        truncated: bool,
    ) -> dict[str, Any]:
        main = preds["model"]
        warnings = list(prep.warnings)
        if truncated:
            seen = int(source.encoded[j].offsets[:, 1].max(initial=0))
            warnings.append(
                f"truncated to the first {self.max_length} tokens ({seen:,} of "
                f"{len(prep.text):,} characters) for the encoder"
            )
        words = self._words(preds["attention"], source, j, prep.text)
        top = sorted(words, key=lambda w: -w[3])[:TOP_WORDS]
        reg = preds["regression"]
        return {
            "text": prep.original,
            "pred_star": int(main.pred_star[j]),
            "probs": None if main.probs is None else [float(p) for p in main.probs[j]],
            "expected_star": None if main.probs is None else float(main.expected_star[j]),
            "regression": None if reg is None else float(reg.score[j]),
            "model": self.model_name,
            "top_words": [{"word": w, "weight": round(a, 4)} for w, _, _, a in top],
            "warnings": warnings,
            "error": None,
            "_words": words,
        }

    def _error_record(self, prep: _Prepared) -> dict[str, Any]:
        return {
            "text": prep.original,
            "pred_star": None,
            "probs": None,
            "expected_star": None,
            "regression": None,
            "model": self.model_name,
            "top_words": [],
            "warnings": prep.warnings,
            "error": prep.error,
            "_words": [],
        }

    def _words(
        self, attention: Predictions | None, source: EncodedSource, j: int, text: str
    ) -> list[tuple[str, int, int, float]]:
        if attention is None or attention.attention is None:
            return []
        return word_attention(
            text, source.encoded[j].offsets, attention.attention[j], self.segmenter.spans(text)
        )

    def score_records(self, texts: Iterable[Any], batch_size: int = 64) -> list[dict[str, Any]]:
        """:meth:`score` without the internal per-word list (what the CLI and API return)."""
        return [_public(r) for r in self.score(texts, batch_size)]

    def explain(self, text: str) -> dict[str, Any]:
        """The score of one text plus every word with its character span and attention weight,
        for highlighting (``words``: word, start, end, weight; offsets into ``text``, the cleaned
        text the model saw; ``attention_model``: the head whose weights they are)."""
        record = self.score([text])[0]
        prep = _prepare(text)
        words = record.pop("_words")
        record["clean_text"] = prep.text
        record["attention_model"] = self.attention_model_name
        record["words"] = [
            {"word": w, "start": s, "end": e, "weight": round(a, 6)} for w, s, e, a in words
        ]
        return record


def _token_layers(model: Any) -> list[int]:
    if model is None:
        return []
    if getattr(model, "kind", None) == "ensemble":
        return [x for m in model.members.values() for x in _token_layers(m)]
    return list(getattr(model, "layers", [])) if needs_tokens(model) else []


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


_SCORERS: dict[tuple[str, str | None], tuple[float, Scorer]] = {}


def get_scorer(run: str | Path | None = None, model: str | None = None) -> Scorer:
    """A cached :class:`Scorer` for a run name or directory (default: the latest trained run
    under ``$DOUBAN_RUNS_DIR`` or runs/); reloaded when the run's models change on disk."""
    runs_dir = Path(os.environ.get("DOUBAN_RUNS_DIR") or Settings().runs_dir)
    if run is None:
        run_dir = find_trained_run(runs_dir)
    else:
        run_dir = Path(run) if Path(run).is_dir() else runs_dir / str(run)
    stamp = max(
        (p.stat().st_mtime for p in RunPaths(run_dir).models.glob("*/config.json")), default=0.0
    )
    key = (str(run_dir.resolve()), model)
    cached = _SCORERS.get(key)
    if cached is None or cached[0] != stamp:
        _SCORERS[key] = (stamp, Scorer.load(run_dir, model))
    return _SCORERS[key][1]


def score(
    texts: str | Iterable[Any], run: str | Path | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Score review text(s) with a trained run: a list of records (one per text, in order) with
    pred_star, probs (stars 1..5), expected_star, regression, top_words, warnings and error."""
    if isinstance(texts, str):
        texts = [texts]
    return get_scorer(run, model).score_records(texts)
