"""Metric functions on hand-computed cases."""

import numpy as np
import pytest

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


def test_qwk_of_one_star_everywhere_is_perfect_not_undefined():
    assert quadratic_weighted_kappa([3, 3], [3, 3]) == 1.0
    assert np.isnan(quadratic_weighted_kappa([], []))


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


def test_per_class_and_macro_f1_hand_case():
    m = star_metrics([1, 1, 2, 5], [1, 2, 2, 4])
    one, two = m["per_class"]["1"], m["per_class"]["2"]
    assert (one["precision"], one["recall"], one["support"]) == (1.0, 0.5, 2)
    assert one["f1"] == pytest.approx(2 / 3)
    assert (two["precision"], two["recall"], two["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert m["per_class"]["3"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # macro over the stars that occur (1, 2, 4, 5): F1 2/3, 2/3, 0, 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 4)


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
