"""Fine-tuning on a tiny random BERT: batching, pooling, learning, what moves, save/reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_bert import demo_reviews, tiny_bert, tiny_tokenizer

from pipeline.config import FinetuneSettings
from pipeline.encoding.load import Encoder, EncoderSpec
from pipeline.modeling.batching import (
    collate,
    length_bucketed_batches,
    stratified_subset,
    token_ids,
)
from pipeline.modeling.heads import task_loss
from pipeline.modeling.sentence import (
    SentenceModel,
    load_finetuned,
    pool,
    predict,
    save_finetuned,
)
from pipeline.training.tuning import train

torch.set_num_threads(1)


def tiny_encoder(seed: int = 0, pooling: str = "mean") -> Encoder:
    tokenizer = tiny_tokenizer()
    spec = EncoderSpec("tiny", "", pooling, "query: ", "tiny-fingerprint")
    return Encoder(spec, tiny_bert(len(tokenizer), seed=seed), tokenizer)


def _settings(**kw) -> FinetuneSettings:
    base = dict(
        epochs=4,
        lr=3e-3,
        batch_size=16,
        max_length=32,
        eval_every=1000,
        patience=5,
        warmup_frac=0.1,
        dropout=0.0,
        val_limit=None,
    )
    return FinetuneSettings(**{**base, **kw})


def _batch(encoder: Encoder, texts):
    ids = token_ids(encoder, texts, 32)
    return collate(ids, encoder.tokenizer.pad_token_id, torch.device("cpu"))


def _mean_loss(model: SentenceModel, encoder: Encoder, texts, stars) -> float:
    input_ids, mask = _batch(encoder, texts)
    model.eval()
    with torch.no_grad():
        return float(task_loss(model.output, model(input_ids, mask)[0], torch.as_tensor(stars - 1)))


def _hidden_states(model: SentenceModel, encoder: Encoder, texts) -> list[np.ndarray]:
    input_ids, mask = _batch(encoder, texts)
    with torch.no_grad():
        out = model.encoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    keep = mask.bool().numpy()
    return [h.numpy()[keep] for h in out.hidden_states]


def test_length_buckets_cover_every_index_once_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=1000)
    batches = length_bucketed_batches(lengths, 32, rng=np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_batches = np.array_split(rng.permutation(1000), len(batches))
    padded_random = sum(len(b) * lengths[b].max() for b in random_batches)
    assert padded < 0.75 * padded_random
    again = length_bucketed_batches(lengths, 32, rng=np.random.default_rng(2))
    assert [b.tolist() for b in again] != [b.tolist() for b in batches]  # epochs differ


def test_stratified_subset_keeps_the_star_mix():
    stars = np.repeat([1, 2, 3, 4, 5], [300, 100, 150, 250, 200])
    rows = stratified_subset(stars, 100, seed=0)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100
    assert np.bincount(stars[rows])[1:].tolist() == [30, 10, 15, 25, 20]
    assert len(stratified_subset(stars, None, seed=0)) == len(stars)
    assert len(stratified_subset(stars, 0, seed=0)) == len(stars)
    assert not np.array_equal(rows, stratified_subset(stars, 100, seed=1))


def test_collate_pads_right_with_a_mask():
    ids, mask = collate([np.array([5, 6, 7]), np.array([8])], 0, torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask, "mean"), torch.tensor([[2.0, 2.0]]))
    assert torch.allclose(pool(hidden, mask, "cls"), torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="pooling"):
        pool(hidden, mask, "max")


@pytest.mark.parametrize("output", ["classification", "regression", "ordinal"])
def test_finetuning_lowers_loss_and_moves_top_layers_more(output):
    encoder = tiny_encoder()
    texts, stars = demo_reviews(192, seed=0)
    val_texts, val_stars = demo_reviews(48, seed=1)
    model = SentenceModel(encoder.model, "mean", output, dropout=0.0)
    before_loss = _mean_loss(model, encoder, texts, stars)
    before_states = _hidden_states(model, encoder, texts)
    report = train(
        model, encoder, texts, stars, val_texts, val_stars, _settings(), seed=0, progress=False
    )
    after_loss = _mean_loss(model, encoder, texts, stars)
    after_states = _hidden_states(model, encoder, texts)
    assert after_loss < 0.85 * before_loss
    assert report.steps == report.planned_steps == 4 * 12
    assert report.frozen_parameters == model.encoder.get_input_embeddings().weight.numel()
    change = [
        np.linalg.norm(a - b) / np.linalg.norm(b)
        for a, b in zip(after_states, before_states, strict=True)
    ]
    assert change[-1] > 3 * change[0], change
    preds = predict(model, encoder, val_texts, max_length=32)
    assert preds.pred_star.min() >= 1 and preds.pred_star.max() <= 5
    if output == "regression":
        assert preds.probs is None
    else:
        assert np.allclose(preds.probs.sum(axis=1), 1.0, atol=1e-5)


def test_frozen_word_embeddings_do_not_move_and_unfrozen_do():
    texts, stars = demo_reviews(64, seed=2)
    for freeze in (True, False):
        encoder = tiny_encoder()
        model = SentenceModel(encoder.model, "mean", "classification")
        before = model.encoder.get_input_embeddings().weight.detach().clone()
        train(
            model,
            encoder,
            texts,
            stars,
            texts[:16],
            stars[:16],
            _settings(epochs=1, freeze_embeddings=freeze),
            seed=0,
            progress=False,
        )
        moved = not torch.equal(before, model.encoder.get_input_embeddings().weight)
        assert moved is not freeze


def test_early_stopping_restores_the_best_check():
    encoder = tiny_encoder()
    texts, stars = demo_reviews(128, seed=3)
    model = SentenceModel(encoder.model, "mean", "classification")
    report = train(
        model,
        encoder,
        texts,
        stars,
        texts[:32],
        stars[:32],
        _settings(epochs=6, eval_every=2, patience=0),
        seed=0,
        progress=False,
    )
    vals = [h["val"] for h in report.history]
    assert report.best_val == max(vals)
    if report.stopped_early:
        assert report.steps < report.planned_steps
    preds = predict(model, encoder, texts[:32], max_length=32)
    assert float((preds.pred_star == stars[:32]).mean()) == pytest.approx(report.best_val)


def test_seeded_runs_are_identical():
    texts, stars = demo_reviews(64, seed=4)
    weights = []
    for _ in range(2):
        encoder = tiny_encoder(seed=1)
        model = SentenceModel(encoder.model, "mean", "ordinal")
        train(
            model,
            encoder,
            texts,
            stars,
            texts[:16],
            stars[:16],
            _settings(epochs=1),
            seed=7,
            progress=False,
        )
        weights.append(model.head.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_saved_model_reloads_to_identical_outputs(tmp_path):
    encoder = tiny_encoder(pooling="cls")
    texts, stars = demo_reviews(64, seed=5)
    model = SentenceModel(encoder.model, "cls", "classification")
    train(
        model,
        encoder,
        texts,
        stars,
        texts[:16],
        stars[:16],
        _settings(epochs=1),
        seed=0,
        progress=False,
    )
    before = predict(model, encoder, texts, max_length=32)
    save_finetuned(tmp_path / "finetune_cls", model, encoder, {"max_length": 32})
    loaded = load_finetuned(tmp_path / "finetune_cls")
    after = loaded.predict(texts)
    assert loaded.config["output"] == "classification" and loaded.model.pooling == "cls"
    assert loaded.encoder.spec.prefix == "query: "
    assert np.array_equal(before.probs, after.probs)
    assert np.array_equal(before.pred_star, after.pred_star)


def test_loading_a_missing_model_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="douban finetune"):
        load_finetuned(tmp_path / "runs" / "x" / "models" / "finetune_cls")


@pytest.mark.parametrize("output", ["classification", "ordinal"])
def test_self_attentive_classifier_learns_with_only_the_top_layer(output):
    """The studio's classifier on the tuned encoder: the loss falls, the top layer and the head
    move, the frozen layers below (and the embeddings) do not."""
    encoder = tiny_encoder()
    texts, stars = demo_reviews(192, seed=0)
    arch = {"hops": 2, "attention_dim": 16, "mlp_dim": 32, "dropout": 0.0}
    model = SentenceModel(encoder.model, "mean", output, 0.0, "attention", arch)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before_loss = _mean_loss(model, encoder, texts, stars)
    report = train(
        model, encoder, texts, stars, texts[:48], stars[:48],
        _settings(train_layers=1, head_lr=1e-2), seed=0, penalty=0.1, progress=False,
    )  # fmt: skip
    assert _mean_loss(model, encoder, texts, stars) < 0.9 * before_loss
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("encoder.encoder.layer.2.") for k in moved)
    assert any(k.startswith("head.w_s1") for k in moved)
    assert not any(k.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.")) for k in moved)
    assert not any(k.startswith("encoder.encoder.layer.1.") for k in moved)
    assert report.trainable_parameters < sum(p.numel() for p in model.parameters()) / 2


def test_the_tuned_head_starts_from_the_frozen_one(tmp_path):
    from pipeline.modeling.bundle import save_model
    from pipeline.modeling.heads import HeadModel
    from pipeline.training.tuning import saved_head, warm_start_head

    encoder = tiny_encoder()
    arch = {"hops": 2, "attention_dim": 16, "mlp_dim": 32, "dropout": 0.0}
    last = encoder.model.config.num_hidden_layers
    frozen = HeadModel.build("classification", 32, [last], [], arch | {"layer_mix": True})
    save_model(tmp_path / "head_cls", frozen.tensors(), frozen.config)
    model = SentenceModel(encoder.model, "mean", "classification", 0.0, "attention", arch)
    assert warm_start_head(model, saved_head(tmp_path, "classification")) == "head_cls"
    for key, value in frozen.module.state_dict().items():
        assert torch.equal(model.head.state_dict()[key], value), key
    other = SentenceModel(
        encoder.model, "mean", "classification", 0.0, "attention", arch | {"hops": 3}
    )
    # another shape: starts from scratch
    assert warm_start_head(other, saved_head(tmp_path, "classification")) is None
