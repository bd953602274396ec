"""A tiny randomly initialised BERT with a character tokenizer, for fast tests of code that
fine-tunes or inspects an encoder (real e5-small is 118M parameters; this is a few thousand)."""

from __future__ import annotations

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
POSITIVE = ["好看", "感动", "精彩", "喜欢", "经典"]
NEGATIVE = ["失望", "无聊", "烂片", "难看", "尴尬"]
NEUTRAL = ["电影", "剧情", "演员", "一般", "还行", "这部", "画面"]
PUNCT = ["，", "。", "！"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per Chinese character (like BERT's CJK handling), offsets included."""
    chars = sorted({c for w in POSITIVE + NEGATIVE + NEUTRAL + PUNCT for c in w})
    vocab = {t: i for i, t in enumerate(SPECIALS + ["query", ":"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(
        handle_chinese_chars=True, lowercase=False, strip_accents=False
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def tiny_bert(vocab_size: int, seed: int = 0, layers: int = 3, attn: str = "sdpa") -> BertModel:
    """Weights drawn at the scale of a trained model (std 0.2, not BERT's 0.02 init), so a few
    fine-tuning steps perturb it as they perturb a pretrained encoder instead of rewriting it."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )
    config._attn_implementation = attn
    return BertModel(config, add_pooling_layer=False).eval()


def demo_reviews(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Short reviews whose star follows their sentiment words (5: positive ... 1: negative)."""
    rng = np.random.default_rng(seed)
    texts, stars = [], rng.integers(1, 6, size=n)
    for star in stars:
        n_pos = {1: 0, 2: 0, 3: 1, 4: 2, 5: 3}[int(star)]
        n_neg = {1: 3, 2: 2, 3: 1, 4: 0, 5: 0}[int(star)]
        words = list(rng.choice(POSITIVE, n_pos)) + list(rng.choice(NEGATIVE, n_neg))
        words += list(rng.choice(NEUTRAL, rng.integers(1, 3)))
        rng.shuffle(words)
        texts.append("".join(words) + str(rng.choice(PUNCT)))
    return texts, stars.astype(np.int64)
