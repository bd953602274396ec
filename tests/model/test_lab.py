"""Representation lab: probes, geometry, projections, word in context, attention heads, and the
cached `douban lab` run end to end on a tiny random BERT."""

from __future__ import annotations

from pathlib import Path

import lab_plots as plots
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_bert import demo_reviews, tiny_bert, tiny_tokenizer
from typer.testing import CliRunner

from pipeline import Run, Scorer, artifacts
from pipeline.cli import app
from pipeline.config import load_settings
from pipeline.data.text import clean_text, word_spans
from pipeline.encoding.load import load_encoder
from pipeline.encoding.onnx_encoder import OnnxEncoder
from pipeline.features.extract import extract_features
from pipeline.lab import attention_heads as ah
from pipeline.lab import geometry, probes, projection
from pipeline.lab import word_in_context as wic
from pipeline.lab.run import findings, read_lab, run_lab
from pipeline.modeling.head_numpy import NumpyHead
from pipeline.workflow import finetune_run, train_run

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ probes


def test_probe_curve_finds_the_one_informative_layer():
    rng = np.random.default_rng(0)
    n, d = 600, 8
    labels = rng.integers(1, 4, size=n)
    x = rng.normal(size=(n, 3, d))
    x[:, 1, 0] += 5.0 * labels  # layer 1 carries the label; layers 0 and 2 are noise
    curve = probes.probe_layers(x[:400], labels[:400], x[400:], labels[400:], progress=False)
    assert curve.accuracy[1] > 0.8  # near the Bayes rate, under the probe's strong penalty
    assert curve.accuracy[0] < 0.5 and curve.accuracy[2] < 0.5
    assert curve.best_layer == 1
    assert curve.n_train == 400 and curve.n_test == 200
    assert 0.2 < curve.majority < 0.5


def test_probe_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="layers, dim"):
        probes.probe_layers(np.zeros((4, 2, 3)), [1, 2, 1, 2], np.zeros((4, 3, 3)), [1, 2, 1, 2])


# ------------------------------------------------------------------------------ geometry


def test_cka_is_one_for_itself_and_rotations_and_low_for_unrelated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert geometry.linear_cka(x, x) == pytest.approx(1.0)
    assert geometry.linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)
    assert geometry.linear_cka(x, rng.normal(size=(200, 16))) < 0.3
    wide = rng.normal(size=(20, 64))  # d > N takes the Gram-matrix route
    assert geometry.linear_cka(wide, wide @ np.linalg.qr(rng.normal(size=(64, 64)))[0]) == (
        pytest.approx(1.0)
    )


def test_cka_per_layer_and_matrix():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(100, 3, 8))
    b = a.copy()
    b[:, 2] = rng.normal(size=(100, 8))  # only the top layer changed
    per_layer = geometry.cka_per_layer(a, b)
    assert per_layer[0] == pytest.approx(1.0) and per_layer[1] == pytest.approx(1.0)
    assert per_layer[2] < 0.4
    matrix = geometry.cka_matrix(a, b)
    assert matrix.shape == (3, 3) and matrix[0, 0] == pytest.approx(1.0)


def test_separation_and_silhouette_grow_as_classes_pull_apart():
    rng = np.random.default_rng(2)
    labels = np.repeat([1, 2, 3, 4, 5], 60)
    noise = rng.normal(size=(300, 6))
    centres = np.eye(6)[labels - 1]
    close, far = noise + 0.5 * centres, noise + 5.0 * centres
    sep_close, sep_far = geometry.separation(close, labels), geometry.separation(far, labels)
    assert sep_far["ratio"] > 3 * sep_close["ratio"]
    assert sep_far["extreme_ratio"] > sep_close["extreme_ratio"]
    assert geometry.silhouette(far, labels) > geometry.silhouette(close, labels) + 0.3
    rows = geometry.layer_geometry(np.stack([close, far], axis=1), labels)
    assert rows[1]["ratio"] > rows[0]["ratio"]


# ------------------------------------------------------------------------------ projection


def test_projection_shapes_and_alignment_undoes_a_rotation():
    rng = np.random.default_rng(3)
    pooled = rng.normal(size=(50, 2, 10))
    maps = projection.project_layers(pooled, "pca", progress=False)
    assert maps.shape == (2, 50, 2)
    angle = 1.0
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = 4.0 * maps[0] @ rot
    assert np.allclose(projection.align(maps[0], turned), maps[0], atol=1e-4)
    tsne = projection.project(pooled[:, 0], "tsne")
    assert tsne.shape == (50, 2) and np.isfinite(tsne).all()
    with pytest.raises(ValueError, match="pca"):
        projection.project(pooled[:, 0], "umap")


# ------------------------------------------------------------------------------ word in context


def test_word_vector_averages_the_words_subtokens():
    offsets = np.array([[-1, -1], [0, 1], [1, 2], [2, 4], [-1, -1]])
    states = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    assert wic.token_positions(offsets, 1, 3).tolist() == [2, 3]
    assert np.allclose(wic.word_vector(states, offsets, 1, 3), states[[2, 3]].mean(axis=0))
    with pytest.raises(ValueError, match="truncated"):
        wic.word_vector(states, offsets, 10, 12)


def test_occurrences_follow_jieba_words():
    texts = ["这部电影很好看", "一点都不好看啊", "好看好看", "没什么意思", "好看的电影"]
    found = wic.find_occurrences(texts, "好看", word_spans)
    assert [o.row for o in found] == [0, 1, 2, 4]
    first = found[0]
    assert texts[first.row][first.start : first.end] == "好看"
    assert len(wic.find_occurrences(texts, "好看", word_spans, limit=2)) == 2


def test_similarity_tables():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [-0.9, -0.2]])
    sims = wic.cosine_matrix(vectors)
    assert np.allclose(np.diag(sims), 1.0)
    labels = np.array([5, 5, 1, 1])
    table = wic.mean_similarity_by_label(sims, labels, [1, 3, 5])
    assert table[0, 2] < 0 < table[2, 2]
    assert np.isnan(table[1, 1])
    assert wic.polarity_gap(sims, labels) > 1.5


# ------------------------------------------------------------------------------ attention heads


def _hand_made_attention(t: int = 5) -> np.ndarray:
    """Layer 1 of 1, three heads: next token (last row on itself), all on the first token,
    uniform."""
    att = np.zeros((1, 3, t, t))
    for i in range(t):
        att[0, 0, i, min(i + 1, t - 1)] = 1.0
    att[0, 1, :, 0] = 1.0
    att[0, 2] = 1.0 / t
    return att


def test_head_pattern_shares_on_a_hand_made_tensor():
    tokens = ["<s>", "▁好看", "！", "▁电影", "</s>"]
    assert ah.punctuation_mask(tokens).tolist() == [False, False, True, False, False]
    review = ah.ReviewAttention(tokens, np.zeros((5, 2)), _hand_made_attention())
    shares = ah.head_pattern_shares([review, review])
    assert shares["next"][0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert shares["previous"][0].tolist() == pytest.approx([0.0, 0.25, 0.2])  # row 1 -> 0
    assert shares["self"][0].tolist() == pytest.approx([0.2, 0.2, 0.2])
    assert shares["first"][0].tolist() == pytest.approx([0.0, 1.0, 0.2])
    assert shares["last"][0].tolist() == pytest.approx([0.4, 0.0, 0.2])
    assert shares["punctuation"][0].tolist() == pytest.approx([0.2, 0.0, 0.2])
    assert ah.top_heads(shares["next"], k=1) == [{"layer": 1, "head": 0, "share": 1.0}]
    assert ah.top_heads(shares["first"], k=1)[0]["head"] == 1


def test_word_level_view_sums_columns_and_averages_rows():
    tokens = ["<s>", "▁好", "看", "！", "</s>"]
    offsets = np.array([[-1, -1], [0, 1], [1, 2], [2, 3], [-1, -1]])
    labels, groups = ah.word_groups(offsets, tokens, [("好看", 0, 2)])
    assert labels == ["<s>", "好看", "！", "</s>"]
    assert [g.tolist() for g in groups] == [[0], [1, 2], [3], [4]]
    att = _hand_made_attention()
    words = ah.word_level(att, groups)
    assert words.shape == (1, 3, 4, 4)
    assert np.allclose(words.sum(-1), 1.0)
    assert words[0, 2, 1, 1] == pytest.approx(0.4)  # uniform head: 2 of 5 tokens are 好看


def test_compare_weights_on_text_tokens():
    text = np.array([False, True, True, True, True, False])
    same = ah.compare_weights([9, 1, 2, 3, 4, 9], [0, 0.1, 0.2, 0.3, 0.4, 0], text)
    assert same["spearman"] == pytest.approx(1.0) and same["top_overlap"] == 1.0
    flipped = ah.compare_weights([9, 4, 3, 2, 1, 9], [0, 0.1, 0.2, 0.3, 0.4, 0], text)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["top_overlap"] < 1.0


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = tiny_tokenizer()
    tiny_bert(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_encoder_attention_rows_sum_to_one_and_sdpa_is_restored(encoder_dir):
    encoder = load_encoder(str(encoder_dir), prefix="query: ")
    texts = ["好看！", "这部电影剧情一般，演员还行。"]
    atts = ah.encoder_attention(encoder, texts, max_length=32)
    assert [a.attention.shape[-1] for a in atts] == [len(a.tokens) for a in atts]
    assert atts[0].attention.shape[:2] == (3, 4)
    assert np.allclose(atts[1].attention.sum(-1), 1.0, atol=1e-5)
    assert encoder.model.config._attn_implementation != "eager"
    view = ah.head_view(encoder, texts[1], word_spans(texts[1]), max_length=32)
    assert view["words"][:6] == ["[CLS]", "query", ":", "这部", "电影", "剧情"]
    assert view["word_attention"].shape[-1] == len(view["words"])
    assert np.allclose(view["word_attention"].sum(-1), 1.0, atol=1e-5)


CONFIG = """
[features]
encoder = "{encoder}"
prefix = "query: "
max_length = 32
device = "cpu"

[head]
epochs = 2

[finetune]
train_limit = 64
epochs = 1
lr = 3e-3
batch_size = 16
eval_every = 2
max_length = 32
device = "cpu"

[lab]
eval_reviews = 40
probe_train_reviews = 60
words = ["好看", "不存在的词"]
word_reviews = 30
head_reviews = 8
tsne = false
device = "cpu"
"""


def _make_run(runs_dir: Path, encoder_dir: Path) -> Path:
    """A prepared run of demo-like reviews and a settings file for the tiny encoder."""
    texts, stars = demo_reviews(300, seed=11)
    split = np.array(["train"] * 180 + ["val"] * 40 + ["test"] * 80)
    prepared = runs_dir / "tiny" / "prepared"
    prepared.mkdir(parents=True)
    pd.DataFrame(
        {
            "review_id": np.arange(len(texts), dtype=np.int64),
            "film": "测试电影",
            "star": stars.astype(np.int8),
            "comment": texts,
            "text": texts,
            "tokens": [[w for w, _, _ in word_spans(t)] for t in texts],
            "split": split,
        }
    ).to_parquet(prepared / "reviews.parquet")
    artifacts.write_manifest(prepared, "prepare", artifacts.fingerprint(texts))
    config = runs_dir / "tiny.toml"
    config.write_text(CONFIG.format(encoder=encoder_dir), "utf-8")
    # the lab's own settings, without [features]: it must take the encoder from the run
    lab_only = CONFIG[CONFIG.index("[head]") :]
    (runs_dir / "tiny-lab.toml").write_text(lab_only, "utf-8")
    return config


def test_finetune_then_lab_end_to_end_and_cached(tmp_path, encoder_dir):
    runs_dir = tmp_path / "runs"
    config = _make_run(runs_dir, encoder_dir)
    cli = ["--config", str(config), "--run", "tiny", "--runs-dir", str(runs_dir)]
    settings = load_settings(config, runs_dir=runs_dir, run_name="tiny")
    extract_features(settings)
    train_run(settings, ["head_cls"], progress=False)  # its attention meets the encoder's
    result = CliRunner().invoke(app, ["finetune", *cli])
    assert result.exit_code == 0, result.output
    model_dir = settings.paths.model("finetune_cls")
    metrics = artifacts.read_json(settings.paths.metrics)["evaluations"]["random"]["models"]
    assert set(metrics["finetune_cls"]) >= {"val", "test"}
    assert metrics["finetune_cls"]["test"]["n"] == 80
    predictions = pd.read_parquet(settings.paths.predictions)
    # an encoder pass per review: the fine-tuned model predicts the splits metrics read, only
    assert set(predictions.loc[predictions["model"] == "finetune_cls", "split"]) == {"val", "test"}
    # ... and its mix with TF-IDF + LR (trained here for it) joins the comparison
    ensemble = artifacts.read_json(settings.paths.model("ensemble_finetune_tfidf") / "config.json")
    assert ensemble["members"] == ["finetune_cls", "tfidf_lr"]
    assert sum(ensemble["member_weights"]) == pytest.approx(1.0)
    assert metrics["ensemble_finetune_tfidf"]["test"]["n"] == 80 and "tfidf_lr" in metrics
    config_doc = artifacts.read_json(model_dir / "config.json")
    assert config_doc["data"]["train_reviews"] == 64 and config_doc["train"]["steps"] > 0
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert finetune_run(settings, evaluate=False, progress=False) == model_dir  # up to date
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    # the self-attentive classifier's bundle: the tuned encoder beside a head that reads it;
    # Scorer runs it on ONNX Runtime + numpy and gives the stars evaluation stored
    assert config_doc["kind"] == "head" and (model_dir / "encoder" / "tokenizer.json").is_file()
    assert config_doc["warm_start"] == "head_cls"  # it started where the frozen head ended
    scorer = Scorer.load("tiny", model="finetune_cls", runs_dir=runs_dir)
    assert isinstance(scorer.encoder, OnnxEncoder) and isinstance(scorer.model, NumpyHead)
    assert scorer.attention_model_name == "finetune_cls"  # it explains itself
    test = pd.read_parquet(settings.paths.reviews).query("split == 'test'")
    test = test[test["text"].map(clean_text) == test["text"]]  # what prepare would have kept
    assert len(test) > 10
    stored = predictions.query("model == 'finetune_cls' and evaluation == 'random'")
    stored = stored.set_index("review_id").loc[test["review_id"]]
    records = scorer.score_records(test["text"].tolist())
    assert [r["pred_star"] for r in records] == stored["pred_star"].tolist()
    got = np.array([r["probs"] for r in records])
    assert np.abs(got - np.stack(stored["probs"])).max() < 1e-4

    lab_cli = ["--config", str(runs_dir / "tiny-lab.toml"), *cli[2:]]  # default encoder: e5
    result = CliRunner().invoke(app, ["lab", "all", *lab_cli])
    assert result.exit_code == 0, result.output
    summary = artifacts.read_json(settings.paths.lab / "summary.json")
    assert summary["model"] == "finetune_cls"
    # the frozen side is the encoder the run was featurised with, not the command's default
    assert summary["encoder"]["name"] == str(encoder_dir) and summary["encoder"]["max_length"] == 32
    assert set(summary["parts"]) == {"probes", "geometry", "projection", "words", "heads"}
    lab = read_lab(settings.paths)
    layers = 4  # embeddings + 3 transformer layers
    assert len(lab["probes"]["curves"]["frozen"]["accuracy"]) == layers
    assert len(lab["geometry"]["cka"]) == layers
    assert lab["geometry"]["cka"][0] > lab["geometry"]["cka"][-1]
    assert lab["projection_arrays"]["pca_finetuned"].shape == (layers, 40, 2)
    word, missing = lab["words"]["words"]
    assert word["used"] == len(word["occurrences"]) > 3 and "note" in missing
    assert lab["words_arrays"]["w0_frozen_similarity"].shape[0] == layers
    assert lab["heads_arrays"]["shares_finetuned"].shape == (len(ah.PATTERNS), 3, 4)
    versus = lab["heads"]["vs_attentive_head"]["finetuned"]
    run = Run.open("tiny", runs_dir=runs_dir)  # the default model's own attention (or head_cls)
    assert versus["head_model"] == run.attention_model(run.default_model)
    assert versus["reviews"] == 8
    assert -1.0 <= versus["cls"]["spearman"] <= 1.0
    per_layer = summary["findings"]["per_layer"]
    assert [r["layer"] for r in per_layer] == list(range(layers))
    assert isinstance(summary["findings"]["top_layers_changed_most"], bool)

    for figure in (
        plots.probe_curves(lab),
        plots.geometry_curves(lab),
        plots.projection_grid(lab),
        plots.head_patterns(lab, "finetuned"),
        plots.word_similarity(lab),
    ):
        figure.savefig(tmp_path / "figure.png", dpi=40)
        assert (tmp_path / "figure.png").stat().st_size > 500

    stamps = {p.name: p.stat().st_mtime_ns for p in settings.paths.lab.iterdir()}
    run_lab(settings, ["probes", "words"], progress=False)  # cached: nothing rewritten
    assert all(
        (settings.paths.lab / name).stat().st_mtime_ns == stamp
        for name, stamp in stamps.items()
        if name != "summary.json"
    )


def test_findings_report_whether_top_layers_moved_most():
    def docs(cka: list[float], sep_after: list[float]) -> tuple[dict, dict]:
        n = len(cka)
        curve = {"accuracy": [0.4] * n}
        geo = [{"ratio": 1.0, "silhouette": 0.0}] * n
        after = [{"ratio": r, "silhouette": 0.0} for r in sep_after]
        probes_doc = {"curves": {"frozen": curve, "ft": {"accuracy": [0.5] * n}}}
        return probes_doc, {"model": "ft", "layers": {"frozen": geo, "ft": after}, "cka": cka}

    yes = findings(*docs([1.0, 0.99, 0.9, 0.5, 0.3, 0.2], [1.0, 1.0, 1.1, 1.5, 2.0, 2.5]))
    assert yes["top_layers_changed_most"] and yes["cka_top"] == pytest.approx(0.25)
    assert yes["lower_layers_nearly_unchanged"]  # mean CKA 0.995 on layers 0-1
    no = findings(*docs([0.3, 0.4, 0.9, 0.95, 1.0, 1.0], [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]))
    assert not no["top_layers_changed_most"] and not no["lower_layers_nearly_unchanged"]
    assert "did not" in no["statement"]
    assert "note" in findings({"curves": {}}, {"model": None})
