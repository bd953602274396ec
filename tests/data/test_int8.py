"""int8 features (the CPU default: ONNX Runtime, dynamically quantised) against fp32: the same
reviews give nearly the same vectors and the same stars, and a run encoded in int8 scores new
text with the int8 graph, as its models were trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline import Scorer
from pipeline.config import load_settings
from pipeline.data.demo import generate_demo_corpus
from pipeline.data.prepare import prepare_run
from pipeline.data.text import clean_text
from pipeline.encoding.load import resolve_encoder
from pipeline.encoding.onnx_encoder import OnnxEncoder, load_onnx_encoder, onnx_available
from pipeline.features.extract import extract_features
from pipeline.workflow import train_run

SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not onnx_available(), reason="onnxruntime is not installed"),
]


def pooled(encoder: OnnxEncoder, texts: list[str]) -> np.ndarray:
    encoded = encoder.encode_texts(texts, token_layers=[-1], max_length=128, token_budget=2048)
    return np.stack([e.pooled_mean[-1] for e in encoded])


@pytest.mark.real_data
def test_int8_agrees_with_fp32_on_real_reviews() -> None:
    """On 1,200 real dmsc_sample reviews: pooled vectors nearly parallel, and a classifier
    trained on fp32 vectors gives the same star to int8 vectors of unseen reviews."""
    path = SHARED_DATA / "dmsc_sample.csv"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    rows = pd.read_csv(path, usecols=["Comment", "Star"]).dropna()
    rows = rows.assign(text=rows["Comment"].map(clean_text)).query("text.str.len() > 0")
    rows = rows.sample(1200, random_state=0)
    texts, stars = rows["text"].tolist(), rows["Star"].to_numpy()
    spec = resolve_encoder("e5-small")
    fp32 = pooled(load_onnx_encoder(spec, [-1], precision="fp32"), texts)
    int8 = pooled(load_onnx_encoder(spec, [-1], precision="int8"), texts)

    cosine = (fp32 * int8).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.mean() > 0.998 and cosine.min() > 0.99

    train, test = slice(0, 900), slice(900, None)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(fp32[train], stars[train])
    on_fp32, on_int8 = clf.predict(fp32[test]), clf.predict(int8[test])
    assert (on_fp32 == on_int8).mean() >= 0.93  # 0.966 on 1,000 reviews (benchmarks/extract.py)
    exact = {
        name: (pred == stars[test]).mean() for name, pred in (("fp32", on_fp32), ("int8", on_int8))
    }
    assert abs(exact["fp32"] - exact["int8"]) <= 0.02, exact


def test_an_int8_run_scores_with_its_own_graph(tmp_path: Path) -> None:
    """The CPU default encodes in int8; its models record it, and Scorer loads the int8 graph,
    so scoring the test reviews afresh gives the stars evaluation stored."""
    csv = generate_demo_corpus(tmp_path / "demo.csv", n_reviews=500, seed=1)
    settings = load_settings(
        None,
        run_name="int8",
        runs_dir=tmp_path / "runs",
        **{
            "prepare.workers": 1,
            "features.max_length": 64,
            "head.epochs": 2,
            "head.hops": 2,
        },
    )
    prepare_run(settings, [csv])
    store = extract_features(settings)
    assert store.manifest["precision"] == "int8"
    train_run(settings, ["tfidf_lr", "head_cls"], progress=False)

    scorer = Scorer.load("int8", model="head_cls", runs_dir=settings.runs_dir)
    assert scorer.spec["precision"] == "int8"
    assert isinstance(scorer.encoder, OnnxEncoder) and scorer.encoder.precision == "int8"
    reviews = pd.read_parquet(settings.paths.reviews).query("split == 'test'")
    preds = pd.read_parquet(settings.paths.predictions)
    stored = preds[(preds["model"] == "head_cls") & (preds["evaluation"] == "random")]
    stored = stored.set_index("review_id").loc[reviews["review_id"]]
    records = scorer.score_records(reviews["text"].tolist())
    got = np.array([r["probs"] for r in records])
    assert np.abs(got - np.stack(stored["probs"])).max() < 0.02
    assert (np.array([r["pred_star"] for r in records]) == stored["pred_star"]).mean() >= 0.97

    # int8 quantises each batch's activations with one scale: a review scored alone moves a
    # little from the same review scored in a batch, and keeps its star almost always
    texts = reviews["text"].head(30).tolist()
    together = scorer.score_records(texts)
    alone = [scorer.score_records([t])[0] for t in texts]
    moved = np.abs(np.array([r["probs"] for r in together]) - [r["probs"] for r in alone])
    assert moved.max() < 0.02
    same = np.mean([a["pred_star"] == b["pred_star"] for a, b in zip(together, alone, strict=True)])
    assert same >= 0.96
