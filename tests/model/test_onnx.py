"""Scoring without torch, against torch, with the session's demo run: the encoder on ONNX
Runtime (same tokens, features, stars and attended words) and the heads in numpy (same
probabilities and attention); a new process scores without importing torch or transformers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline import Scorer
from pipeline.encoding.encode import encode_texts, tokenize
from pipeline.encoding.onnx_encoder import OnnxEncoder, onnx_available, onnx_file
from pipeline.errors import InputError
from pipeline.modeling.bundle import load_star_model
from pipeline.modeling.head_numpy import NumpyHead
from pipeline.modeling.inputs import EncodedSource

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not onnx_available(), reason="onnxruntime is not installed"),
]

ODD_TEXTS = [
    "这部电影太好看了，强烈推荐",
    "剧情拖沓，浪费时间 " * 40,  # truncated at max_length
    "not a single Chinese word",
    "🎬🎬👍",
    "  前后有空格  ",
]


@pytest.fixture(scope="module")
def scorers(demo_run):
    return {
        backend: Scorer.load("demo", runs_dir=demo_run.runs_dir, backend=backend)
        for backend in ("onnx", "torch")
    }


@pytest.fixture(scope="module")
def test_texts(scorers):
    reviews = pd.read_parquet(scorers["onnx"].paths.reviews, columns=["comment", "split"])
    return reviews.loc[reviews["split"] == "test", "comment"].astype(str).tolist()


def test_cpu_scoring_runs_on_onnx_by_default(demo_run, scorers):
    scorer = Scorer.load("demo", runs_dir=demo_run.runs_dir)
    assert isinstance(scorer.encoder, OnnxEncoder)
    assert not isinstance(scorers["torch"].encoder, OnnxEncoder)
    assert onnx_file(scorer.encoder.spec, scorer.encoder.layers).is_file()  # exported once


def test_tokens_and_offsets_match_transformers(scorers):
    onnx, torch_encoder = scorers["onnx"].encoder, scorers["torch"].encoder.encoder
    max_length = scorers["onnx"].max_length
    fast = onnx.tokenize(ODD_TEXTS, max_length)
    slow = tokenize(torch_encoder, ODD_TEXTS, max_length)
    assert fast.lengths.tolist() == slow.lengths.tolist()
    assert max(fast.lengths) == max_length
    for a, b in zip(fast.input_ids, slow.input_ids, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast.offsets, slow.offsets, strict=True):
        np.testing.assert_array_equal(a, b)


def test_features_match_torch(scorers, test_texts):
    onnx, torch_encoder = scorers["onnx"].encoder, scorers["torch"].encoder.encoder
    texts = test_texts[:40] + ODD_TEXTS
    kwargs = {"token_layers": [-1], "max_length": scorers["onnx"].max_length, "token_budget": 512}
    fast = onnx.encode_texts(texts, **kwargs)
    slow = encode_texts(torch_encoder, texts, **kwargs)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
        np.testing.assert_allclose(a.pooled_mean, b.pooled_mean, atol=1e-4)
        np.testing.assert_allclose(a.pooled_cls, b.pooled_cls, atol=1e-4)
        assert a.token_states.shape == b.token_states.shape
        assert a.token_states.dtype == np.float16
        np.testing.assert_allclose(
            a.token_states.astype(np.float32), b.token_states.astype(np.float32), atol=5e-3
        )


def test_same_stars_and_words_as_torch(scorers, test_texts):
    fast = scorers["onnx"].score(test_texts)
    slow = scorers["torch"].score(test_texts)
    agree = np.mean([a.pred_star == b.pred_star for a, b in zip(fast, slow, strict=True)])
    assert agree >= 0.995
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-3)
        assert [w["word"] for w in a.top_words][:3] == [w["word"] for w in b.top_words][:3]


@pytest.mark.parametrize("head", ["head_cls", "head_ord", "head_reg"])
def test_numpy_heads_match_torch_heads(scorers, test_texts, head):
    scorer = scorers["onnx"]
    fast = load_star_model(scorer.paths.models, head, scorer.fingerprint, numpy_heads=True)
    slow = load_star_model(scorer.paths.models, head, scorer.fingerprint)
    assert isinstance(fast, NumpyHead) and not isinstance(slow, NumpyHead)
    texts = test_texts[:60] + ODD_TEXTS
    layers = sorted(set(fast.layers))
    source = EncodedSource(texts, scorer.encode(texts, layers), [], layers, scorer.fingerprint)
    rows = list(range(len(texts)))
    a, b = fast.predict(source, rows, batch_size=16), slow.predict(source, rows, batch_size=16)
    np.testing.assert_array_equal(a.pred_star, b.pred_star)
    np.testing.assert_allclose(a.score, b.score, atol=1e-5)
    if b.probs is not None:
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    for x, y in zip(a.attention, b.attention, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_layers_outside_the_graph_are_refused(scorers):
    onnx = scorers["onnx"].encoder
    missing = next(x for x in range(onnx.num_layers + 1) if x not in onnx.layers)
    with pytest.raises(ValueError, match="not in the exported graph"):
        onnx.encode_texts(["好看"], token_layers=[missing], max_length=16, token_budget=64)


def test_unknown_backend_is_refused(demo_run):
    with pytest.raises(InputError, match="backend"):
        Scorer.load("demo", runs_dir=demo_run.runs_dir, backend="tensorflow")


def test_without_onnxruntime_it_falls_back_to_torch(demo_run, monkeypatch):
    monkeypatch.setattr("pipeline.encoding.onnx_encoder.onnx_available", lambda: False)
    scorer = Scorer.load("demo", runs_dir=demo_run.runs_dir)
    assert not isinstance(scorer.encoder, OnnxEncoder)
    assert scorer("这部电影太好看了")[0]["label"] in range(1, 6)


def test_scoring_in_a_new_process_imports_no_torch(demo_run, scorers):
    probe = (
        "import sys; from pipeline import Scorer; "
        f"s = Scorer.load('demo', runs_dir={str(demo_run.runs_dir)!r}); "
        "print(s('这部电影太好看了')[0]['label'], s.explain('剧情拖沓').top_words[0]['word'], "
        "*(m in sys.modules for m in ('torch', 'transformers', 'sklearn')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    star, word, *imported = out.stdout.split()
    assert int(star) in range(1, 6) and word in "剧情拖沓"
    assert imported == ["False", "False", "False"]
