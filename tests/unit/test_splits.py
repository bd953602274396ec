"""Train / val / test splits (pipeline/splits.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.splits import (
    SPLITS,
    TEST,
    TRAIN,
    VAL,
    assign_splits,
    resolve_holdout,
    split_counts,
)

FILMS = {
    "钢铁侠1": ("Iron Man", "钢铁侠1"),
    "长城": ("The Great Wall", "长城"),
    "泰囧": (None, "泰囧"),
}


def reviews(n: int, seed: int = 1) -> tuple[list[str], np.ndarray, list[str]]:
    """Mostly unique texts plus DMSC-like repeats ("还行", "好看") with mixed stars and films."""
    rng = np.random.default_rng(seed)
    stars = rng.choice([1, 2, 3, 4, 5], size=n, p=[0.3, 0.12, 0.18, 0.25, 0.15])
    films = rng.choice(list(FILMS), size=n).tolist()
    texts = [f"评论{i}" for i in range(n)]
    for i in rng.choice(n, size=n // 5, replace=False):
        texts[i] = str(rng.choice(["还行", "好看", "烂片", "一般", "推荐", "无聊", "感动"]))
    return texts, stars, films


def test_no_text_appears_in_two_splits() -> None:
    texts, stars, films = reviews(5000)
    codes = assign_splits(texts, stars, films, seed=3)
    split_of: dict[str, int] = {}
    for text, code in zip(texts, codes, strict=True):
        assert split_of.setdefault(text, code) == code, f"{text!r} is in two splits"
    train_texts = {t for t, c in zip(texts, codes, strict=True) if c == TRAIN}
    test_texts = {t for t, c in zip(texts, codes, strict=True) if c == TEST}
    assert test_texts and not test_texts & train_texts


def test_fractions_and_star_mix_are_stratified() -> None:
    texts, stars, films = reviews(20_000)
    codes = assign_splits(texts, stars, films, val_frac=0.1, test_frac=0.2, seed=0)
    for code, target in ((TRAIN, 0.7), (VAL, 0.1), (TEST, 0.2)):
        assert abs((codes == code).mean() - target) < 0.01
    overall = np.bincount(stars, minlength=6)[1:] / len(stars)
    for code in (TRAIN, VAL, TEST):
        mix = np.bincount(stars[codes == code], minlength=6)[1:] / (codes == code).sum()
        assert np.abs(mix - overall).max() < 0.015, (SPLITS[code], mix, overall)


def test_integer_text_keys_group_like_texts() -> None:
    texts, stars, films = reviews(3000)
    keys = np.array([hash(t) for t in texts], dtype=np.int64)
    codes = assign_splits(keys, stars, films, seed=2)
    for text in ("还行", "好看"):
        assert len({c for t, c in zip(texts, codes, strict=True) if t == text}) == 1
    assert abs((codes == TEST).mean() - 0.1) < 0.01


def test_splits_depend_on_the_seed_only() -> None:
    texts, stars, films = reviews(3000)
    first = assign_splits(texts, stars, films, seed=7)
    assert np.array_equal(first, assign_splits(texts, stars, films, seed=7))
    assert not np.array_equal(first, assign_splits(texts, stars, films, seed=8))


def test_held_out_films_form_the_test_split() -> None:
    texts, stars, films = reviews(6000)
    holdout = resolve_holdout(["the great wall"], FILMS)
    assert holdout == ["长城"]
    codes = assign_splits(texts, stars, films, val_frac=0.1, holdout=holdout, seed=0)
    films_arr = np.asarray(films)
    assert (codes[films_arr == "长城"] == TEST).all()
    held_texts = {t for t, f in zip(texts, films, strict=True) if f == "长城"}
    # other films reach test only through a text they share with the held-out film
    for text, film, code in zip(texts, films, codes, strict=True):
        if film != "长城":
            assert (code == TEST) == (text in held_texts)
    rest = films_arr != "长城"
    eligible = rest & (codes != TEST)
    assert abs((codes[eligible] == VAL).mean() - 0.1) < 0.015
    counts = split_counts(codes, stars, films_arr, holdout)
    assert counts["test_from_other_films"] == int((rest & (codes == TEST)).sum()) > 0
    assert counts["train"] + counts["val"] + counts["test"] == len(texts)


def test_unknown_holdout_film_lists_the_available_films() -> None:
    with pytest.raises(ValueError, match="unknown holdout film") as err:
        resolve_holdout(["Iron Man", "Avatar"], FILMS)
    assert "Avatar" in str(err.value) and "钢铁侠1 / Iron Man" in str(err.value)
    with pytest.raises(ValueError, match="nothing to train on"):
        resolve_holdout(["钢铁侠1", "长城", "泰囧"], FILMS)


def test_bad_fractions_are_rejected() -> None:
    with pytest.raises(ValueError, match="sum below 1"):
        assign_splits(["a", "b"], [1, 2], val_frac=0.5, test_frac=0.5)


def test_empty_input_gives_empty_splits() -> None:
    assert assign_splits([], []).size == 0
