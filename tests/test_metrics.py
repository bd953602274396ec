"""Metric functions on hand-computed cases."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, precision_recall_fscore_support

from pipeline.modeling.metrics import (
    calibration,
    confusion_matrix,
    expected_star,
    median_star,
    normalise_rows,
    quadratic_weighted_kappa,
    star_metrics,
)


def test_qwk_hand_cases():
    assert quadratic_weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    # two reviews, opposite ends swapped: observed disagreement 2, chance disagreement 1 -> -1
    assert quadratic_weighted_kappa([1, 5], [5, 1]) == pytest.approx(-1.0)


def test_qwk_matches_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    t, p = rng.integers(1, 6, 300), rng.integers(1, 6, 300)
    p[:150] = t[:150]
    expected = cohen_kappa_score(t, p, weights="quadratic")
    assert quadratic_weighted_kappa(t, p) == pytest.approx(expected)


def test_off_by_one_accuracy_mae_rmse():
    m = star_metrics([1, 3, 5], [2, 5, 5])
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["off_by_one"] == pytest.approx(2 / 3)
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert m["distribution"] == {"true": [1, 0, 1, 0, 1], "pred": [0, 1, 0, 0, 2]}


def test_confusion_normalisation_empty_rows_are_zero():
    cm = confusion_matrix([1, 1, 3], [1, 2, 3])
    assert cm[0].tolist() == [1, 1, 0, 0, 0]
    norm = normalise_rows(cm)
    assert norm[0].tolist() == [0.5, 0.5, 0, 0, 0]
    assert norm[1].tolist() == [0, 0, 0, 0, 0]  # star 2 never occurs: zeros, not NaN
    assert not np.isnan(norm).any()


def test_per_class_and_macro_f1_match_sklearn():
    rng = np.random.default_rng(1)
    t, p = rng.integers(1, 6, 200), rng.integers(1, 6, 200)
    m = star_metrics(t, p)
    prec, rec, f1, support = precision_recall_fscore_support(t, p, labels=[1, 2, 3, 4, 5])
    for k in range(5):
        got = m["per_class"][str(k + 1)]
        assert got["precision"] == pytest.approx(prec[k])
        assert got["recall"] == pytest.approx(rec[k])
        assert got["f1"] == pytest.approx(f1[k])
        assert got["support"] == support[k]
    assert m["macro_f1"] == pytest.approx(f1_score(t, p, average="macro"))


def test_ece_hand_case():
    probs = np.tile([0.8, 0.05, 0.05, 0.05, 0.05], (4, 1))
    ece, table = calibration([1, 1, 2, 3], probs)  # confidence 0.8, accuracy 0.5
    assert ece == pytest.approx(0.3)
    full = [b for b in table if b["count"]]
    assert len(full) == 1 and full[0]["lower"] == pytest.approx(0.7)
    assert full[0]["accuracy"] == pytest.approx(0.5)


def test_ece_zero_when_perfectly_calibrated():
    probs = np.array([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0]])
    assert calibration([1, 5], probs)[0] == pytest.approx(0.0)


def test_expected_and_median_star():
    probs = np.array([[0.5, 0, 0, 0, 0.5], [0.2] * 5, [0.1, 0.1, 0.1, 0.2, 0.5]])
    assert expected_star(probs).tolist() == pytest.approx([3.0, 3.0, 3.9])
    assert median_star(probs).tolist() == [1, 3, 4]


def test_probabilistic_variants_reported():
    probs = np.array([[0.6, 0.4, 0, 0, 0], [0, 0, 0, 0.4, 0.6]])
    m = star_metrics([2, 5], [1, 5], probs)
    assert m["expected_star_mae"] == pytest.approx((0.6 + 0.4) / 2)
    assert m["median_star_mae"] == pytest.approx(0.5)
    assert m["log_loss"] == pytest.approx(-(np.log(0.4) + np.log(0.6)) / 2)
    assert "reliability" in m and len(m["reliability"]) == 10


def test_empty_and_out_of_range():
    assert star_metrics([], []) == {"n": 0}
    with pytest.raises(ValueError, match="1..5"):
        star_metrics([0], [1])
