"""Scoring new reviews with a trained model: `douban score`, ``pipeline.score(...)``, the app.

A :class:`Scorer` holds one model of a run, loaded from its self-contained bundle (the model's
directory: weights plus a config that names the encoder, ``max_length`` and the segmenter prepare
ran), so it needs neither the feature store nor the prepared reviews. Like a transformers
pipeline it runs preprocess (clean, flag: :mod:`~pipeline.predict.preprocess`) -> forward (encode,
predict: :mod:`~pipeline.predict.forward`) -> postprocess (typed :class:`ScoreRecord`:
:mod:`~pipeline.predict.postprocess`), each step entered once, and it is callable the same way::

    clf = Scorer.load("demo")
    clf("剧情拖沓，浪费时间")           # [{"label": 1, "score": 0.83}]
    clf(texts, top_k=None)             # every star's probability, per text
    clf.explain("剧情拖沓").words       # attention per jieba word; shows as HTML in notebooks

On CPU, scoring imports neither torch nor transformers: the encoder runs on ONNX Runtime
(exported once, :mod:`pipeline.encoding.onnx_encoder`; torch when onnxruntime is absent or
``backend="torch"``) and heads run in numpy (:mod:`pipeline.modeling.head_numpy`).

Only what the model reads is loaded: a TF-IDF model needs no encoder; the head whose attention
explains a score (:func:`pipeline.modeling.spec.explaining_head`) is loaded on the first
explanation. Per explained review, token attention is summed over hops, spread evenly over each
token's characters, then summed over each jieba word's characters.

Bad input never raises: empty, whitespace-only or cleaned-away text gets ``error``; text without
Chinese characters (English, emoji-only) is scored with a warning; text longer than the encoder's
``max_length`` tokens is truncated with a warning; a file row that is not valid UTF-8 gets
``error``. Batch scoring returns exactly one record per input, in order.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline.config import RunPaths
from pipeline.data.aspects import default_terms
from pipeline.data.text import clean_text
from pipeline.errors import InputError, ModelNotFoundError, StageMissingError
from pipeline.locate import resolve_run
from pipeline.modeling.bundle import check_encoder, encode_with, load_star_model
from pipeline.modeling.calibration import validation_predictions
from pipeline.modeling.spec import (
    build_segmenter,
    default_model_of,
    explaining_head,
    list_models,
    read_config,
    read_scoring_spec,
)
from pipeline.predict.adapt import Adaptation, adapt_records, fit_adaptation, model_prior
from pipeline.predict.aspects import score_aspects
from pipeline.predict.forward import SCORE_TOKEN_BUDGET, forward
from pipeline.predict.postprocess import scored_records
from pipeline.predict.preprocess import prepared_inputs
from pipeline.predict.records import Explanation, ScoreRecord, positive_int

log = logging.getLogger(__name__)

BATCH_SIZE = 256  # texts per model call (each split into encoder batches by SCORE_TOKEN_BUDGET)
TEXT_COLUMNS = ("comment", "text", "review", "content")
BACKENDS = ("auto", "onnx", "torch")  # what runs the encoder (see Scorer.encoder)


class Scorer:
    """One model of a run, loaded from its bundle; ``score``, ``explain`` or call it."""

    def __init__(
        self,
        paths: RunPaths,
        model: str | None = None,
        device: str = "cpu",
        backend: str = "auto",
        configs: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """``configs``: every saved model's config.json when the caller has read them (a
        :class:`~pipeline.run.Run` of the same pinned model set), else read here as needed."""
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
        paths = paths.pinned()  # the model, its config and the metrics from one model set
        self.paths = paths
        self.device = device
        self.backend = backend
        self._configs = dict(configs or {})
        self.available = list(self._configs) if configs is not None else list_models(paths.models)
        if not self.available:
            raise StageMissingError(
                f"run {paths.name} has no trained models",
                hint=f"run `douban train --run {paths.name}`",
            )
        self.model_name: str = model or default_model_of(paths, self.available) or ""
        if self.model_name not in self.available:
            raise ModelNotFoundError(
                f"run {paths.name} has no model {self.model_name!r}; it has: "
                f"{', '.join(self.available)}",
                hint="pick one of those with --model",
            )
        self.config = self.config_of(self.model_name)
        self.spec = read_scoring_spec(self.config, self.model_name)
        self.model = load_star_model(
            paths.models, self.model_name, self.spec["encoder"].get("fingerprint"),
            numpy_heads=True, config=self.config,
        )  # fmt: skip

    @classmethod
    def load(
        cls,
        run: str | Path | RunPaths | None = None,
        model: str | None = None,
        runs_dir: Path | str | None = None,
        device: str = "cpu",
        backend: str = "auto",
    ) -> Scorer:
        """The scorer of run ``run`` (a name under ``runs_dir``, a run directory, or None for
        the newest trained run) with ``model`` (default: the run's default model); ``backend``
        runs the encoder on ONNX Runtime ("onnx"), torch ("torch"), or ONNX Runtime on CPU
        when it is installed ("auto")."""
        return cls(resolve_run(run, Path(runs_dir) if runs_dir else None), model, device, backend)

    # ------------------------------------------------------------------ what is loaded lazily

    def config_of(self, model: str) -> dict[str, Any]:
        """A saved model's config.json, read once."""
        if model not in self._configs:
            self._configs[model] = read_config(self.paths.models, model)
        return self._configs[model]

    @cached_property
    def attention_model_name(self) -> str | None:
        """The head whose attention explains this model's scores (recorded in every record)."""
        heads = [
            m for m in self.available if self.config_of(m).get("kind") == "head"
        ]
        return explaining_head(self.model_name, heads, self.config.get("members", []))

    @cached_property
    def attention_model(self) -> Any:
        name = self.attention_model_name
        if name is None:
            return None
        if name == self.model_name:
            return self.model
        if self.model.kind == "ensemble" and name in self.model.members:
            return self.model.members[name]
        return load_star_model(
            self.paths.models, name, self.fingerprint, numpy_heads=True, config=self.config_of(name)
        )

    @cached_property
    def feature_spec(self) -> dict[str, Any]:
        """The bundle spec of the encoder features read here: this model's, or, when it reads
        none (TF-IDF, a fine-tuned encoder), the explaining head's."""
        name = self.attention_model_name
        if self.model.store_needs is not None or name is None or name == self.model_name:
            return self.spec
        return read_scoring_spec(self.config_of(name), name)

    @property
    def max_length(self) -> int:
        return int(self.feature_spec["max_length"])

    @property
    def fingerprint(self) -> str | None:
        return self.feature_spec["encoder"].get("fingerprint")

    @cached_property
    def encoder(self) -> Any:
        """The encoder the model's features came from, resolved here by name (the run may come
        from another machine's cache) and refused when its weights are not the bundle's: an
        :class:`~pipeline.encoding.onnx_encoder.OnnxEncoder` (no torch, no transformers) unless
        the backend is torch, the device is not the CPU or ONNX Runtime is not installed."""
        from pipeline.encoding.load import bundled_encoder, resolve_encoder
        from pipeline.encoding.onnx_encoder import load_onnx_encoder, onnx_available

        wanted = self.feature_spec["encoder"]
        if wanted.get("bundle"):  # a fine-tuned encoder inside the model's bundle
            where = self.paths.models / wanted["bundle"]
            spec = bundled_encoder(where, wanted["pooling"], wanted["prefix"])
        else:
            spec = resolve_encoder(wanted["name"], wanted["pooling"], wanted["prefix"])
        check_encoder({"encoder": wanted}, spec.fingerprint, self.model_name)
        if self.backend == "onnx" or (
            self.backend == "auto" and self.device == "cpu" and onnx_available()
        ):
            # the stored layers (any model of the run reads a subset) and the last one
            return load_onnx_encoder(
                spec,
                [*self.feature_spec.get("token_layers", []), -1],
                precision=self.feature_spec.get("precision", "fp32"),
            )
        from pipeline.encoding.encode import TorchEncoder, accelerate_for_cpu  # as features ran
        from pipeline.encoding.load import load_encoder  # transformers: only when needed

        return TorchEncoder(accelerate_for_cpu(load_encoder(spec, device=self.device)))

    @cached_property
    def segmenter(self) -> Any:
        """jieba as the run's prepare stage ran it (its film words and user dictionary)."""
        return build_segmenter(self.spec["segmenter"])

    # ------------------------------------------------------------------ the pipeline

    def models_for(self, explain: bool) -> list[Any]:
        """The models a batch runs: this one, and the head that explains it when asked."""
        attention = self.attention_model if explain else None
        return [self.model] + ([attention] if attention not in (None, self.model) else [])

    def encode(self, texts: list[str], layers: list[int]) -> list[Any]:
        """Encoder features of clean texts (token states of ``layers``), on this backend."""
        return encode_with(self.encoder, texts, layers, self.max_length, SCORE_TOKEN_BUDGET)

    def _records(self, inputs: Any, batch_size: int, explain: bool) -> Iterator[ScoreRecord]:
        """preprocess (clean, flag) -> forward (encode, predict) -> postprocess (records),
        lazily, one record per input in order."""
        prepared = prepared_inputs(inputs)
        windows = forward(self, prepared, batch_size, explain)
        return scored_records(self, windows, explain)

    # ------------------------------------------------------------------ entry points

    @cached_property
    def explains_for_free(self) -> bool:
        """Whether the attended words cost no extra model: this model's own attention head (or
        its ensemble's) reads the encoder anyway. Otherwise (TF-IDF, a fine-tuned encoder) an
        explanation loads another encoder, so only ``explain=True`` asks for one."""
        name = self.attention_model_name
        own = name == self.model_name or name in self.config.get("members", [])
        return name is not None and own and self.model.store_needs is not None

    def score(
        self,
        texts: Iterable[Any] | str,
        batch_size: int = BATCH_SIZE,
        explain: bool | None = None,
        adapt_prior: bool = False,
    ) -> list[ScoreRecord]:
        """One record per input text, in order. ``explain`` adds the attended words (None:
        when they cost no other model, see :attr:`explains_for_free`); ``adapt_prior``
        re-weights the probabilities to the star mix EM estimates for these texts together (a
        new corpus has its own). Texts are scored in length-sorted batches of ``batch_size``
        over windows of :data:`~pipeline.predict.batching.LOOKAHEAD`, the next batch's jieba
        and tokenizer work overlapping the encoder's."""
        explain = self.explains_for_free if explain is None else explain
        records = list(self._records(texts, positive_int("batch_size", batch_size), explain))
        if adapt_prior:
            self.adapt_records(records)
        return records

    @functools.cached_property
    def adaptation(self) -> Adaptation:
        """Calibration, start mix and validation check for adapting this model's scores
        (:func:`adapt.fit_adaptation` on the run's validation predictions), fitted once."""
        stars, probs, films = validation_predictions(self.paths.predictions, self.model_name)
        return fit_adaptation(stars, probs, model_prior(self.paths, self.config), films)

    def adapt_records(
        self, records: Sequence[Any], target: str | Sequence[float] = "em", say: bool = True
    ) -> tuple[list[float], bool]:
        """Re-weight the scored records to ``target`` ("em" or five star shares) from this
        model's training mix and validation calibration (:func:`adapt.adapt_records`, which the
        CLI, the Python API and the service all use); returns the mix adapted to and whether
        each review was re-weighted to it (see :attr:`Adaptation.per_review`)."""
        return adapt_records(
            records,
            target,
            self.model_name,
            lambda: self.adaptation,
            say=say,
        )

    def score_records(
        self,
        texts: Iterable[Any] | str,
        batch_size: int = BATCH_SIZE,
        adapt_prior: bool = False,
        explain: bool | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`score` as plain dicts (what the CLI and the API print)."""
        records = self.score(texts, batch_size, explain=explain, adapt_prior=adapt_prior)
        return [r.to_dict() for r in records]

    def aspects(
        self, texts: str | Sequence[str], terms: Mapping[str, Sequence[str]] | None = None
    ) -> Any:
        """Clause-level opinions (:func:`aspects.score_aspects`): the aspect-bearing clauses of
        a text (a list of them for a list of texts), each scored alone, with the aspects it
        names. ``terms``: the aspects' words (default: the shipped taxonomy; a run's own, as
        the app and the reports use them: ``pipeline.run_terms(run)``)."""
        single = isinstance(texts, str)
        cleaned = [clean_text(t) for t in ([texts] if single else texts)]
        found = score_aspects(self, cleaned, terms or default_terms())
        return found[0] if single else found

    def explain(self, text: str) -> Explanation:
        """The score of one text with every word's attention, for highlighting."""
        return self.score([text], explain=True)[0].explanation()

    def __call__(
        self, inputs: Any, top_k: int | None = 1, batch_size: int = BATCH_SIZE
    ) -> list[Any] | Iterator[list[dict[str, Any]]]:
        """transformers-style: a string gives ``[{"label": star, "score": p}]`` (``top_k``
        most probable stars; None: all five); a list or pandas Series gives one answer per
        text (a dict each when ``top_k=1``, else a list); a generator is scored lazily,
        :data:`~pipeline.predict.batching.LOOKAHEAD` texts at a time (sorted by length
        together), and yields one answer per text, in order."""
        top_k = None if top_k is None else positive_int("top_k", top_k)
        one_text = isinstance(inputs, str)
        records = self._records(inputs, positive_int("batch_size", batch_size), explain=False)
        answers = (record.answer(top_k, one_text) for record in records)
        if one_text:
            return next(answers)
        return (
            list(answers) if isinstance(inputs, Sequence) or hasattr(inputs, "tolist") else answers
        )
