"""The frozen encoder on ONNX Runtime, for features and scoring on CPU: neither torch nor
transformers is imported (torch only exports the graph, once).

The encoder is exported once per (weights fingerprint, token layers) with ``torch.onnx.export``
(dynamic batch and sequence axes) into the cache beside the converted encoder; the graph returns
what the models read: every hidden state's masked-mean and first-token vectors and the chosen
layers' token states (float16, as the feature store keeps them). Text is tokenized with
``tokenizers`` straight from ``tokenizer.json``; batching is the torch path's
(:mod:`pipeline.encoding.tokens`), so both give the same :class:`EncodedReview`. On the 2-core
CPU this runs one review ~5x faster than torch with the same stars (tests/test_onnx.py,
benchmarks/score.py).

``precision="int8"`` runs a dynamically quantised copy of the graph (ONNX Runtime's
``quantize_dynamic``, see :func:`quantize_onnx`), about 1.5x as fast as fp32 on a CPU with
VNNI; the feature stage's CPU default (benchmarks/extract.py measures its speed and agreement).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.encoding.e5_convert import cache_root
from pipeline.encoding.load import EncoderSpec
from pipeline.encoding.tokens import (
    BatchOutput,
    EncodedReview,
    Tokenized,
    encoded_reviews,
    normalize_layers,
    padded_ids,
    plan_batches,
    state_starts,
    tokenized_from,
)
from pipeline.errors import EncoderNotAvailable, InputError

log = logging.getLogger(__name__)

THREADS = 2  # intra-op threads: the machine's two cores
OPSET = 17
OUTPUTS = ("pooled_mean", "pooled_cls", "states")
PRECISIONS = ("fp32", "int8")
CACHED_GRAPHS = 12  # exported graphs kept in the cache (the least recently used go first)
INT8_RECIPE = "q1"  # in the cached file's name: bump when quantize_onnx changes


def onnx_available() -> bool:
    """Whether ONNX Runtime and tokenizers are installed (else scoring runs on torch)."""
    return find_spec("onnxruntime") is not None and find_spec("tokenizers") is not None


def onnx_file(spec: EncoderSpec, layers: Sequence[int], precision: str = "fp32") -> Path:
    """Where the exported graph of these weights, (absolute) token layers and precision is
    cached."""
    tag = "-".join(str(x) for x in layers)
    suffix = "" if precision == "fp32" else f"-{precision}-{INT8_RECIPE}"
    return cache_root() / "onnx" / f"{spec.fingerprint[:20]}-layers{tag}{suffix}.onnx"


def _down_projections(model: Any) -> list[str]:
    """MatMul nodes whose weight narrows its input (in > out: BERT's FFN output layer). Their
    inputs follow a GELU, whose outliers one per-tensor activation scale serves badly."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and len(shape := shapes.get(node.input[1], [])) == 2
        and shape[0] > shape[1]
    ]


def quantize_onnx(source: Path, path: Path) -> None:
    """Write an int8 copy of the fp32 graph ``source`` to ``path``, atomically: the weights of
    every MatMul but the FFN down-projections in int8 per output channel, activations quantised
    on the fly. Measured on 3,000 real reviews (benchmarks/extract.py has the full figures):
    quantising every MatMul runs 2.0x fp32 but its pooled vectors fall to cosine .997 and a
    classifier's stars change on 9% of reviews; keeping the down-projections in fp32 runs 1.5x
    fp32 at cosine .999, 3% changed stars, the same accuracy."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    root, level = logging.getLogger(), logging.getLogger().level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root.setLevel(logging.ERROR)  # its advice to pre-process is for conv nets
            quantize_dynamic(
                str(source),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=_down_projections(onnx.load(str(source))),
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        os.replace(tmp, path)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)


def export_onnx(spec: EncoderSpec, layers: Sequence[int], path: Path) -> None:
    """Export the encoder (torch, once) to ``path``, atomically: pooled vectors of every hidden
    state and token states of ``layers`` (absolute indices), for any batch and length."""
    import torch

    from pipeline.encoding.load import load_encoder

    encoder = load_encoder(spec, attn_implementation="eager")  # traces to plain ONNX ops
    chosen = list(layers)

    class Exportable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = encoder.model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
            ).hidden_states
            mask = attention_mask.to(hidden[0].dtype)
            weights = (mask / mask.sum(1, keepdim=True)).unsqueeze(1)  # (B, 1, T)
            pooled_mean = torch.stack([torch.bmm(weights, h).squeeze(1) for h in hidden], 1)
            pooled_cls = torch.stack([h[:, 0] for h in hidden], 1)
            states = torch.stack([hidden[i] for i in chosen], 2).half()  # (B, T, k, d)
            return pooled_mean, pooled_cls, states

    ids = torch.arange(5, 21, dtype=torch.int64).reshape(2, 8)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so the mask's path is traced
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    axes = {0: "batch", 1: "tokens"}
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # tracer notes on Python conditionals: shapes only
            torch.onnx.export(
                Exportable().eval(),
                (ids, mask),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=list(OUTPUTS),
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "states": axes},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class OnnxEncoder:
    """An exported encoder session with its tokenizer; :meth:`encode_texts` answers as
    :func:`pipeline.encoding.encode.encode_texts` does."""

    spec: EncoderSpec
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    layers: list[int]  # absolute hidden-state indices the graph returns token states of
    num_layers: int
    hidden_size: int
    max_positions: int
    pad_id: int
    precision: str = "fp32"
    device: str = "cpu"

    def tokenize(self, texts: Sequence[str], max_length: int) -> Tokenized:
        """As :func:`pipeline.encoding.encode.tokenize`: ``prefix + text``, truncated."""
        truncation = self.tokenizer.truncation
        if truncation is None or truncation["max_length"] != max_length:
            self.tokenizer.enable_truncation(max_length)
        prefix = self.spec.prefix
        encodings = self.tokenizer.encode_batch([prefix + t for t in texts])
        return tokenized_from(
            [e.ids for e in encodings],
            [e.offsets for e in encodings],
            [e.special_tokens_mask for e in encodings],
            len(prefix),
        )

    def _pick(self, layers: Sequence[int]) -> list[int]:
        """Positions of ``layers`` (absolute) among the graph's token-state outputs."""
        missing = [x for x in layers if x not in self.layers]
        if missing:
            raise ValueError(f"layers {missing} are not in the exported graph ({self.layers})")
        return [self.layers.index(x) for x in layers]

    def batches(
        self,
        tokenized: Tokenized,
        *,
        layers: list[int],
        token_budget: int,
        wants_states: np.ndarray,
        bar: Any = None,
    ) -> Iterator[tuple[np.ndarray, BatchOutput]]:
        """(row indices, outputs) per length-sorted batch, longest first, with the token states
        of ``layers`` (absolute) for the rows in ``wants_states``: as the torch engine's."""
        pick = self._pick(layers)
        for rows in plan_batches(tokenized.lengths, token_budget):
            ids, mask = padded_ids(tokenized, rows, self.pad_id)
            pooled_mean, pooled_cls, states = self.session.run(
                list(OUTPUTS), {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
            )
            keep = mask & wants_states[rows][:, None]
            yield rows, BatchOutput(
                pooled_mean=pooled_mean,
                pooled_cls=pooled_cls,
                states=states[keep][:, pick],
                state_starts=state_starts(tokenized.lengths[rows], wants_states[rows]),
            )
            if bar is not None:
                bar.update(len(rows))

    def encode_texts(
        self, texts: list[str], *, token_layers: list[int], max_length: int, token_budget: int
    ) -> list[EncodedReview]:
        """Each text's features, in input order, from length-sorted batches within
        ``token_budget`` padded tokens."""
        if not 2 <= max_length <= self.max_positions:
            raise InputError(
                f"max_length must be 2..{self.max_positions} for {self.spec.name}, got {max_length}"
            )
        wanted = normalize_layers(token_layers, self.num_layers + 1)
        tokenized = self.tokenize(texts, max_length)
        wants = np.ones(len(texts), dtype=bool)
        budget = max(token_budget, max_length)
        return encoded_reviews(
            tokenized,
            self.batches(tokenized, layers=wanted, token_budget=budget, wants_states=wants),
        )


def _keep_recent(used: Path, keep: int = CACHED_GRAPHS) -> None:
    """Mark ``used`` as just used and evict all but the ``keep`` most recently used graphs:
    every fine-tuned encoder exports its own (~0.5 GB for e5-small), so the cache would
    otherwise grow with each fine-tune."""
    os.utime(used)
    graphs = sorted(used.parent.glob("*.onnx"), key=_last_used, reverse=True)
    for old in graphs[keep:]:
        old.unlink(missing_ok=True)


def _last_used(graph: Path) -> float:
    try:
        return graph.stat().st_mtime
    except OSError:  # evicted meanwhile by another process
        return 0.0


@functools.lru_cache(maxsize=4)
def _session(path: str, threads: int) -> Any:
    """One ONNX Runtime session per graph and process: every model of a run reads the same
    encoder, so switching model (app, service) reuses it instead of loading ~0.5 GB again;
    ``InferenceSession.run`` is thread-safe."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def load_onnx_encoder(
    spec: EncoderSpec,
    token_layers: Sequence[int] | Literal["all"],
    threads: int = THREADS,
    precision: str = "fp32",
) -> OnnxEncoder:
    """The ONNX Runtime encoder of ``spec`` returning token states of ``token_layers``,
    exporting (and quantising, for ``precision="int8"``) it first when the cache has no graph
    for these weights, layers and precision."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    from tokenizers import Tokenizer

    directory = Path(spec.path)
    if not (directory / "tokenizer.json").is_file():
        raise EncoderNotAvailable(f"encoder {spec.name!r} has no tokenizer.json in {directory}")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    num_layers = int(config["num_hidden_layers"])
    wanted = token_layers if token_layers == "all" else list(token_layers)
    layers = sorted(set(normalize_layers(wanted, num_layers + 1)))
    path = onnx_file(spec, layers)
    if not path.exists():
        log.warning("exporting encoder %s to ONNX once (cached at %s)", spec.name, path)
        export_onnx(spec, layers, path)
    if precision == "int8":
        source, path = path, onnx_file(spec, layers, precision)
        if not path.exists():
            log.warning("quantising encoder %s to int8 once (cached at %s)", spec.name, path)
            quantize_onnx(source, path)
    _keep_recent(path)
    return OnnxEncoder(
        spec=spec,
        session=_session(str(path), threads),
        tokenizer=Tokenizer.from_file(str(directory / "tokenizer.json")),
        layers=layers,
        num_layers=num_layers,
        hidden_size=int(config["hidden_size"]),
        max_positions=int(config.get("max_position_embeddings", 512)),
        pad_id=int(config.get("pad_token_id") or 0),
        precision=precision,
    )
