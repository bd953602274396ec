"""Models on disk without pickle: ``models/<name>/model.safetensors`` + ``config.json``.

The config names the model kind, the encoder and its fingerprint, the label mapping, the settings
and the feature layers used, so a model can be rebuilt and checked against the encoder it meets.
Its ``scoring`` section (:mod:`pipeline.modeling.spec`) makes the directory a self-contained
bundle: scoring new text needs neither the feature store nor the prepared data.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from pipeline.artifacts import MODEL_CONFIG as CONFIG
from pipeline.artifacts import MODEL_WEIGHTS as WEIGHTS
from pipeline.artifacts import WEIGHTS_SHA256, atomic_dir, sha256_file, write_json
from pipeline.errors import (
    CorruptArtifactError,
    DoubanError,
    StaleArtifactError,
)
from pipeline.modeling.baselines import EnsembleModel, LinearStarModel, MajorityModel
from pipeline.modeling.head_numpy import NumpyHead
from pipeline.modeling.metrics import LABELS
from pipeline.modeling.saved import SavedModel, read_saved_model
from pipeline.modeling.spec import SCORING, list_models, read_config, retrain_hint, scoring_spec

__all__ = [  # list_models .. scoring_spec: re-exported, they read no weights (see spec.py)
    "CONFIG", "SCORING", "WEIGHTS", "EncoderMismatchError", "FinetunedTextModel", "TunedHeadModel",
    "build_star_model", "check_encoder", "encode_with", "list_models", "load_star_model",
    "read_config", "retrain_hint", "save_model", "scoring_spec",
]  # fmt: skip


FEATURE_KINDS = ("head", "pooled_lr")  # kinds that read encoder features


class EncoderMismatchError(StaleArtifactError):
    """A model was trained on features from a different encoder than the one offered."""


def save_model(model_dir: Path, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> None:
    """Write weights and config together, atomically (a half-written model never appears)."""
    with atomic_dir(model_dir) as tmp:
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(arrays, str(tmp / WEIGHTS))
        checksum = {WEIGHTS_SHA256: sha256_file(tmp / WEIGHTS)}
        write_json(tmp / CONFIG, {"labels": LABELS, **config, **checksum})


def check_encoder(config: dict[str, Any], fingerprint: str | None, model_name: str = "") -> None:
    """Refuse features from another encoder: the weights would read meaningless vectors."""
    expected = config.get("encoder", {}).get("fingerprint")
    if expected is None or fingerprint is None or expected == fingerprint:
        return
    raise EncoderMismatchError(
        f"model {model_name or '?'} was trained on encoder "
        f"{config['encoder'].get('name')!r} (fingerprint {expected}) but the features come from "
        f"fingerprint {fingerprint}; re-run `douban features` and `douban train` with one encoder"
    )


def load_star_model(
    models_dir: Path,
    name: str,
    fingerprint: str | None = None,
    numpy_heads: bool = False,
    config: dict[str, Any] | None = None,
) -> Any:
    """Rebuild a saved model (baseline, head, fine-tuned or ensemble) by the kind in its config
    (``config``, when the caller has read it), refusing one trained on another encoder than
    ``fingerprint``: every file it needs is read first (:func:`read_saved_model`), then it is
    built from memory. ``numpy_heads``: heads (also inside an ensemble) run in numpy
    (:mod:`pipeline.modeling.head_numpy`), so scoring imports no torch."""
    return build_star_model(read_saved_model(models_dir, name, config), fingerprint, numpy_heads)


def build_star_model(
    saved: SavedModel, fingerprint: str | None = None, numpy_heads: bool = False
) -> Any:
    """The model object of a read model directory (:func:`load_star_model`)."""
    members = {m.name: build_star_model(m, fingerprint, numpy_heads) for m in saved.members}
    config, tensors, kind = saved.config, saved.tensors, saved.kind
    # a fine-tuned self-attentive model outside scoring encodes text with its own encoder
    tuned = kind == "head" and bool(config.get("tuned_encoder")) and not numpy_heads
    if kind in FEATURE_KINDS and not tuned:  # text models read none; members check their own
        check_encoder(config, fingerprint, saved.name)
    try:
        if kind == "finetune":  # carries its own encoder weights: reads text, not features
            from pipeline.modeling.sentence import build_finetuned  # transformers: this kind only

            return FinetunedTextModel(build_finetuned(saved))
        if tuned:
            from pipeline.modeling.heads import HeadModel

            return TunedHeadModel(saved, HeadModel.from_saved(tensors, config))
        if kind == "ensemble":
            model = EnsembleModel(members, tensors["member_weights"])
        elif kind == "head" and numpy_heads:
            model = NumpyHead.from_saved(tensors, config)
        elif kind == "head":
            from pipeline.modeling.heads import HeadModel  # torch: training and evaluation

            model = HeadModel.from_saved(tensors, config)
        elif kind == "majority":
            model = MajorityModel.from_saved(tensors, config)
        elif kind in ("tfidf_lr", "tfidf_ridge", "pooled_lr"):
            model = LinearStarModel.from_saved(tensors, config)
        else:
            raise CorruptArtifactError(f"model {saved.name} has unknown kind {kind!r}",
                                       hint=saved.hint)  # fmt: skip
    except DoubanError:  # a member's own error, already naming its file
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # missing or misshapen tensors
        raise CorruptArtifactError(
            f"model {saved.path} does not match its config.json ({err})", hint=saved.hint
        ) from err
    model.config = config
    return model


class TunedHeadModel:
    """A fine-tuned self-attentive model (``modeling.sentence.save_tuned_head``) behind
    ``predict(source, rows)``: it reads the reviews' cleaned text and encodes it with its own
    tuned encoder (ONNX Runtime on a CPU, as scoring does, so evaluation and `douban score` give
    the same stars), then runs its head."""

    kind = "finetune"
    reads_text = True  # evaluation predicts only its val/test reviews (an encoder pass each)
    store_needs, token_layers, reads_words = None, [], False  # its own encoder, not the store's

    def __init__(self, saved: SavedModel, head: Any) -> None:
        self.models_dir, self.name, self.head = saved.path.parent, saved.name, head
        self.config = head.config = saved.config
        self.layers: list[int] = list(head.layers)

    @functools.cached_property
    def encoder(self) -> Any:
        from pipeline.encoding.load import bundled_encoder
        from pipeline.encoding.onnx_encoder import load_onnx_encoder, onnx_available

        wanted = self.config[SCORING]["encoder"]
        spec = bundled_encoder(
            self.models_dir / wanted["bundle"], wanted["pooling"], wanted["prefix"]
        )
        check_encoder({"encoder": wanted}, spec.fingerprint, self.name)
        if onnx_available():
            return load_onnx_encoder(spec, self.layers)
        from pipeline.encoding.encode import TorchEncoder
        from pipeline.encoding.load import load_encoder

        return TorchEncoder(load_encoder(spec))

    def predict(self, source: Any, rows: Any) -> Any:
        from pipeline.modeling.inputs import EncodedSource

        texts = source.texts(rows)
        max_length = int(self.config[SCORING]["max_length"])
        encoded = encode_with(self.encoder, texts, self.layers, max_length)
        mine = EncodedSource(texts, encoded, [[] for _ in texts], self.layers, None)
        return self.head.predict(mine, list(range(len(texts))))


def encode_with(
    encoder: Any, texts: list[str], layers: list[int], max_length: int, token_budget: int = 2048
) -> list[Any]:
    """Encoder features of clean texts on either runtime (a
    :class:`~pipeline.encoding.tokens.FeatureEncoder`: ONNX Runtime, or torch wrapped)."""
    return encode_tokenized(encoder, encoder.tokenize(texts, max_length), layers, token_budget)


def encode_tokenized(
    encoder: Any, tokenized: Any, layers: list[int], token_budget: int
) -> list[Any]:
    """Each tokenized text's :class:`~pipeline.encoding.tokens.EncodedReview`, in order, from
    length-sorted batches of at most ``token_budget`` padded tokens."""
    from pipeline.encoding.tokens import encoded_reviews, normalize_layers

    width = int(tokenized.lengths.max(initial=1))
    batches = encoder.batches(
        tokenized,
        layers=normalize_layers(layers, encoder.num_layers + 1),
        token_budget=max(token_budget, width),
        wants_states=np.ones(len(tokenized.lengths), dtype=bool),
    )
    return encoded_reviews(tokenized, batches)


class FinetunedTextModel:
    """A fine-tuned encoder (pipeline.modeling.sentence) behind the same ``predict(source,
    rows)`` as the feature-based models: it reads the reviews' cleaned text."""

    kind = "finetune"
    reads_text = True  # evaluation predicts only its val/test reviews (an encoder pass each)
    store_needs, token_layers, reads_words = None, [], False

    def __init__(self, finetuned: Any) -> None:
        self.finetuned = finetuned  # pipeline.modeling.sentence.Finetuned
        self.config = finetuned.config

    def predict(self, source: Any, rows: Any) -> Any:
        return self.finetuned.predict(source.texts(rows))
