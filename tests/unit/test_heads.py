"""The self-attentive head: masking, penalty, decoding, and that it learns a toy task."""

import numpy as np
import pytest
import torch

from pipeline.config import HeadSettings
from pipeline.modeling.heads import (
    HeadModel,
    SelfAttentiveHead,
    attention_penalty,
    corn_probs,
    decode,
    pad_batch,
)
from pipeline.training.train import fit_head


def _batch(lengths, layers=2, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return pad_batch([rng.normal(size=(n, layers, d)).astype(np.float16) for n in lengths])


@pytest.mark.parametrize("output", ["classification", "regression", "ordinal"])
def test_attention_rows_sum_to_one_and_padding_gets_zero(output):
    torch.manual_seed(0)
    states, mask = _batch([3, 7, 1])
    head = SelfAttentiveHead(8, 2, output, hops=3, attention_dim=5, mlp_dim=6)
    out = head(states, mask)
    assert out.attention.shape == (3, 3, 7)
    assert torch.allclose(out.attention.sum(-1), torch.ones(3, 3))
    assert (out.attention[~mask[:, None, :].expand_as(out.attention)] == 0).all()
    assert out.raw.shape == (3, {"classification": 5, "regression": 1, "ordinal": 4}[output])


def test_padding_does_not_change_a_review_output():
    torch.manual_seed(0)
    head = SelfAttentiveHead(8, 2, "classification", hops=2, attention_dim=4, mlp_dim=6).eval()
    states, mask = _batch([4, 9])
    alone, alone_mask = states[:1, :4], mask[:1, :4]
    assert torch.allclose(head(states, mask).raw[0], head(alone, alone_mask).raw[0], atol=1e-6)


def test_penalty_zero_for_orthogonal_one_hot_hops():
    a = torch.zeros(1, 3, 5)
    a[0, 0, 0] = a[0, 1, 2] = a[0, 2, 4] = 1.0
    assert attention_penalty(a).item() == pytest.approx(0.0)
    same = torch.zeros(1, 2, 5)
    same[0, :, 1] = 1.0  # two identical hops: A A^T = all ones, ||. - I||^2 = 2
    assert attention_penalty(same).item() == pytest.approx(2.0)


def test_corn_probabilities_are_a_distribution():
    logits = torch.randn(50, 4) * 3
    p = corn_probs(logits)
    assert (p >= -1e-7).all()
    assert torch.allclose(p.sum(1), torch.ones(50), atol=1e-6)


def test_decode_regression_clips_and_rounds():
    d = decode("regression", torch.tensor([[0.2], [3.4], [9.0]]))
    assert d.pred_star.tolist() == [1, 3, 5]
    assert d.score.tolist() == pytest.approx([1.0, 3.4, 5.0])
    assert d.probs is None


def test_decode_classification_expected_star():
    d = decode("classification", torch.tensor([[0.0, 0, 0, 0, 50.0]]))
    assert d.pred_star.tolist() == [5]
    assert d.score[0] == pytest.approx(5.0)


class ToySource:
    """Reviews of random tokens; the star is set by which marker vector one token carries."""

    fingerprint = None

    def __init__(self, n=600, d=16, seed=0):
        rng = np.random.default_rng(seed)
        markers = rng.normal(size=(5, d)) * 3
        self.stars = rng.integers(1, 6, n)
        self.states = []
        for star in self.stars:
            length = int(rng.integers(3, 12))
            x = rng.normal(size=(length, 2, d))
            x[rng.integers(length), :, :] += markers[star - 1]
            self.states.append(x.astype(np.float16))

    def __len__(self):
        return len(self.states)

    def token_states(self, rows, layers):
        return [self.states[r][:, : len(layers)] for r in rows]

    def pooled(self, rows, layers):
        return np.stack([self.states[r][:, 0].mean(0) for r in rows]).astype(np.float32)


@pytest.mark.parametrize("output", ["classification", "regression", "ordinal"])
def test_head_learns_toy_task_and_round_trips(output):
    torch.set_num_threads(1)
    src = ToySource()
    rows = np.arange(len(src))
    train, val = rows[:450], rows[450:]
    lengths = np.array([len(s) for s in src.states])
    hs = HeadSettings(hops=2, attention_dim=16, mlp_dim=32, epochs=15, patience=15, lr=5e-3)
    model, info = fit_head(
        src, train, val, src.stars, lengths, output, hs,
        layers=[0, 1], pooled_layers=[], hidden_size=16, progress=False,
    )  # fmt: skip
    pred = model.predict(src, val)
    majority = np.bincount(src.stars[train]).argmax()
    assert (pred.pred_star == src.stars[val]).mean() > (src.stars[val] == majority).mean() + 0.3
    assert len(info["layer_weights"]) == 2
    reloaded = HeadModel.from_saved(model.tensors(), model.config)
    again = reloaded.predict(src, val)
    assert np.array_equal(again.pred_star, pred.pred_star)
    assert np.allclose(again.score, pred.score)
    assert all(len(a) == len(src.states[r]) for a, r in zip(pred.attention, val, strict=True))


def test_training_is_deterministic_on_cpu():
    src = ToySource(n=200)
    rows = np.arange(200)
    lengths = np.array([len(s) for s in src.states])
    hs = HeadSettings(hops=2, attention_dim=8, mlp_dim=8, epochs=2)
    runs = [
        fit_head(src, rows[:150], rows[150:], src.stars, lengths, "classification", hs,
                 layers=[0], pooled_layers=[0], hidden_size=16, seed=3, progress=False)[0]
        for _ in range(2)
    ]  # fmt: skip
    a, b = (m.tensors() for m in runs)
    assert all(np.array_equal(a[k], b[k]) for k in a)
