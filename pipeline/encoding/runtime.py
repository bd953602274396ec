"""Which runtime encodes a run's reviews: ONNX Runtime on a CPU (int8 by default, fp32 on
request), torch on a GPU (bf16 autocast) or where ONNX Runtime is missing. The choice is made
once here, for the local and the Ray engine alike; the precision is part of the feature store's
identity, and the models trained on it score new text with the same graph.
"""

from __future__ import annotations

from typing import Literal

from pipeline.encoding.load import EncoderSpec
from pipeline.encoding.onnx_encoder import load_onnx_encoder, onnx_available
from pipeline.encoding.tokens import FeatureEncoder
from pipeline.errors import EncoderNotAvailable, InputError

PRECISIONS = ("auto", "fp32", "int8")  # features.precision; the graphs: onnx_encoder.PRECISIONS


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: int8 on a CPU with ONNX Runtime, else fp32 (a GPU runs torch in bf16
    autocast, which the store treats as fp32)."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "int8" if device == "cpu" and onnx_available() else "fp32"
    if precision == "int8" and not onnx_available():
        raise EncoderNotAvailable(
            "int8 features need ONNX Runtime", "pip install onnxruntime, or use --precision fp32"
        )
    return precision


def load_feature_encoder(
    spec: EncoderSpec,
    *,
    device: str,
    precision: str,
    token_layers: list[int] | Literal["all"],
    threads: int,
) -> FeatureEncoder:
    """The encoder the feature stage runs: ONNX Runtime (``precision`` resolved, see
    :func:`resolve_precision`) on CPU, torch on a GPU; ``device`` is "cpu", "cuda" or "cuda:N"
    (resolved by the caller)."""
    precision = resolve_precision(precision, device)
    if precision == "int8" or (device == "cpu" and onnx_available()):
        return load_onnx_encoder(spec, token_layers, threads, precision)
    import torch

    from pipeline.encoding.encode import TorchEncoder, accelerate_for_cpu
    from pipeline.encoding.load import load_encoder

    if device == "cpu":
        torch.set_num_threads(threads)
    return TorchEncoder(accelerate_for_cpu(load_encoder(spec, device=torch.device(device))))
