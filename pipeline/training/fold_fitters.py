"""How each model is refitted on one fold of a held-out evaluation (``evaluations.py``): the same
recipes as `douban train` and `douban finetune`, on the fold's train and val rows. Encoder models
read only the reviews the feature store holds; the fine-tuned model encodes text itself and is
tuned once per fold, starting from that fold's frozen head like the stage does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import Settings
from pipeline.encoding.load import pick_device, resolve_encoder
from pipeline.errors import InputError
from pipeline.modeling.baselines import EnsembleModel, LinearStarModel, MajorityModel
from pipeline.modeling.inputs import FeatureSource, Predictions, members_need
from pipeline.modeling.sentence import model_name, predict
from pipeline.training.data import TrainingData
from pipeline.training.train import ALL_MODELS, ENSEMBLES, HEAD_NAMES, _head_layers, fit_head
from pipeline.training.tuning import Tuned, limit_rows, tune_encoder


@dataclass
class Fold:
    """Rows of one train / validate / test round; ``label`` names what is tested."""

    label: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


Fitter = Callable[[TrainingData, Fold, Settings, dict[str, Any]], Any]
FINETUNED = model_name("classification")  # finetune_cls
WARM_STARTS = {FINETUNED: HEAD_NAMES["classification"]}  # fitted first, when asked for or not


def _fit_head(output: str) -> Fitter:
    def fit(data: TrainingData, fold: Fold, settings: Settings, fitted: dict[str, Any]) -> Any:
        has = data.token_mask()
        num_states = data.require_store().num_layers
        model, _ = fit_head(
            data.source, fold.train[has[fold.train]], fold.val[has[fold.val]], data.stars,
            data.token_lengths(), output, settings.head,
            layers=_head_layers(data, settings.head),
            pooled_layers=[num_states - 1] if settings.head.pooled_input else [],
            hidden_size=data.require_store().hidden_size, seed=settings.seed,
            device=pick_device(settings.head.device), progress=False,
        )  # fmt: skip
        model.module.cpu()
        return model

    return fit


def _fit_pooled(last_only: bool) -> Fitter:
    def fit(data: TrainingData, fold: Fold, settings: Settings, fitted: dict[str, Any]) -> Any:
        has, n = data.feature_mask(), data.require_store().num_layers
        layers = [n - 1] if last_only else [x % n for x in settings.head.baseline_pooled_layers]
        train, val = fold.train[has[fold.train]], fold.val[has[fold.val]]
        return LinearStarModel.fit_pooled(data.source, train, val, data.stars, layers)

    return fit


def _fit_ensemble(name: str) -> Fitter:
    def fit(data: TrainingData, fold: Fold, settings: Settings, fitted: dict[str, Any]) -> Any:
        members = {m: fitted[m] for m in ENSEMBLES[name]}
        rows = fold.val[data.input_mask(members_need(members.values()))[fold.val]]
        probs = [m.predict(data.source, rows).probs for m in members.values()]
        return EnsembleModel.fit(members, probs, data.stars[rows])

    return fit


class FoldTuned:
    """A model fine-tuned for one fold, predicting from text in memory (torch): nothing of it
    is saved, the evaluation only measures it."""

    kind = "finetune"
    reads_text = True
    store_needs, token_layers, reads_words = None, [], False

    def __init__(self, tuned: Tuned, max_length: int) -> None:
        self.tuned = tuned
        self.max_length = max_length
        self.config: dict[str, Any] = {"kind": self.kind, "warm_start": tuned.warm_start}

    def predict(self, source: FeatureSource, rows: Sequence[int]) -> Predictions:
        return predict(
            self.tuned.model, self.tuned.encoder, source.texts(rows), max_length=self.max_length
        )


def _fit_finetune(
    data: TrainingData, fold: Fold, settings: Settings, fitted: dict[str, Any]
) -> FoldTuned:
    ft, features, stars = settings.finetune, settings.features, data.stars
    if ft.output != "classification":
        raise InputError(f"{FINETUNED} refits with finetune.output=classification only")
    spec = resolve_encoder(features.encoder, pooling=features.pooling, prefix=features.prefix)
    head = fitted.get(WARM_STARTS[FINETUNED])
    tuned = tune_encoder(
        settings, spec, data.reviews["text"].tolist(), stars,
        limit_rows(fold.train, stars, ft.train_limit, settings.seed),
        limit_rows(fold.val, stars, ft.val_limit, settings.seed),
        warm=None if head is None else (head.config, head.tensors()),
        progress=False, label=f"{FINETUNED} ({fold.label})",
    )  # fmt: skip
    return FoldTuned(tuned, ft.max_length)


FITTERS: dict[str, Fitter] = {
    "majority": lambda d, f, s, _: MajorityModel.fit(d.stars[f.train]),
    "tfidf_lr": lambda d, f, s, _: LinearStarModel.fit_tfidf(
        d.source, f.train, f.val, d.stars, seed=s.seed, balanced=s.head.tfidf_balanced
    ),
    "tfidf_ridge": lambda d, f, s, _: LinearStarModel.fit_tfidf(
        d.source, f.train, f.val, d.stars, True, seed=s.seed
    ),
    "pooled_lr": _fit_pooled(last_only=True),
    "pooled_lr_layers": _fit_pooled(last_only=False),
    **{name: _fit_head(output) for output, name in HEAD_NAMES.items()},
    FINETUNED: _fit_finetune,
    **{name: _fit_ensemble(name) for name in ENSEMBLES},
}
assert set(ALL_MODELS) <= set(FITTERS)


def fit_order(models: Sequence[str], warm_start: bool = True) -> list[str]:
    """The requested models plus what they need (ensemble members; the frozen head a fine-tune
    starts from), needs first."""
    unknown = sorted(set(models) - set(FITTERS))
    if unknown:
        raise InputError(f"cannot evaluate {unknown} by refitting; choose from {list(FITTERS)}")
    needed = [m for name in models for m in ENSEMBLES.get(name, ())] + list(models)
    if warm_start:
        needed = [m for name in needed for m in (WARM_STARTS.get(name), name) if m]
    return list(dict.fromkeys(needed))
