"""Train / val / test splits that never share a review text.

DMSC repeats short comments ("还行", "好看") across stars and films. Splitting row by row would
put the same text in train and test and flatter every model, so rows are grouped by cleaned text
and whole groups go to one split:

1. Repeated texts: the groups in a seeded random order, each split taking the groups whose row
   midpoint falls in its share, so a big group is as likely to land in one split as another and
   the shares are met within half a group at each boundary.
2. Single texts, per star: each split takes what it still needs of that star to reach its share,
   so every split's star mix follows the whole even where the repeated groups skewed it.

With held-out films the test split is every review of those films, plus any review of another
film whose text also occurs in a held-out film (the price of no leakage; counted by
:func:`split_counts` as ``test_from_other_films``). Val is carved from the remaining rows.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = range(3)


def _key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip().casefold()


def resolve_holdout(names: Iterable[str], films: Mapping[str, Iterable[str | None]]) -> list[str]:
    """Film keys for user-given names, matched against any alias (CN or EN, case-insensitive).

    ``films`` maps each film key to its aliases, e.g. ``{"钢铁侠1": ["Iron Man", "钢铁侠1"]}``.
    """
    lookup: dict[str, str] = {}
    for film, aliases in films.items():
        for alias in [film, *aliases]:
            if alias:
                lookup[_key(alias)] = film
    resolved, unknown = [], []
    for name in names:
        film = lookup.get(_key(name))
        if film is None:
            unknown.append(name)
        elif film not in resolved:
            resolved.append(film)
    if unknown:
        available = "; ".join(
            " / ".join(dict.fromkeys(a for a in [film, *aliases] if a))
            for film, aliases in sorted(films.items())
        )
        raise ValueError(
            f"unknown holdout film(s): {', '.join(unknown)}. Available films: {available}"
        )
    if resolved and len(resolved) == len(films):
        raise ValueError("holding out every film leaves nothing to train on; hold out fewer")
    return resolved


def _codes(keys: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Group id per row: rows with equal keys (texts, or integer hashes of them) share an id."""
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
        return np.unique(keys, return_inverse=True)[1].astype(np.int64).reshape(-1)
    array = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return pc.dictionary_encode(array).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def assign_splits(
    texts: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray,
    stars: Sequence[int] | np.ndarray,
    films: Sequence[str] | pa.Array | pa.ChunkedArray | None = None,
    *,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    seed: int = 0,
    holdout: Iterable[str] = (),
) -> np.ndarray:
    """Split code per row (index into :data:`SPLITS`); rows with the same text share a split.

    ``texts`` may also be an integer array of text hashes (prepare passes those: 8 bytes a row
    instead of the whole text column).
    ``holdout`` holds film keys (see :func:`resolve_holdout`); with it, ``test_frac`` is ignored.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(
            f"val_frac={val_frac} and test_frac={test_frac} must be in [0, 1) and sum below 1"
        )
    stars = np.asarray(stars, dtype=np.int64)
    if stars.size and (stars.min() < 1 or stars.max() > 5):
        raise ValueError("stars must be 1..5")
    group = _codes(texts)
    n_groups = int(group.max()) + 1 if group.size else 0
    size = np.bincount(group, minlength=n_groups)
    star_of = np.zeros(n_groups, dtype=np.int64)
    star_of[group] = stars - 1  # exact for the single texts, the only groups it is used for
    group_split = np.full(n_groups, TRAIN, dtype=np.int8)

    holdout = list(holdout)
    eligible = np.ones(n_groups, dtype=bool)
    if holdout:
        if films is None:
            raise ValueError("holdout films need the films column")
        held_rows = _is_in(films, holdout)
        eligible = np.bincount(group, weights=held_rows, minlength=n_groups) == 0
        group_split[~eligible] = TEST
        test_frac = 0.0

    # 1) repeated texts (see the module docstring)
    fractions = np.array([1 - val_frac - test_frac, val_frac, test_frac])  # train, val, test
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[eligible[order]]
    repeated = order[size[order] > 1]
    group_split[repeated] = _take_shares(size[repeated], fractions)
    # 2) single texts, per star: what each split still needs of that star
    in_repeated = np.zeros(n_groups, dtype=bool)
    in_repeated[repeated] = True
    rows = in_repeated[group]
    have = np.bincount(
        group_split[group[rows]].astype(np.int64) * 5 + stars[rows] - 1, minlength=15
    ).reshape(3, 5)
    singles = order[size[order] == 1]
    for star in range(5):
        stratum = singles[star_of[singles] == star]
        target = fractions * (have[:, star].sum() + stratum.size)
        need = np.clip(target - have[:, star], 0, None)
        if stratum.size and need.sum() > 0:
            group_split[stratum] = _take_shares(np.ones(stratum.size), need / need.sum())
    return group_split[group]


def _take_shares(sizes: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Split code per group (in the given order): each split takes the groups whose row midpoint
    falls in its share, so the shares are met within half a group at each boundary."""
    if sizes.size == 0:
        return np.zeros(0, dtype=np.int8)
    midpoint = (np.cumsum(sizes) - sizes / 2) / sizes.sum()
    bounds = np.cumsum(fractions[[TEST, VAL]])  # test first, then val, the rest train
    codes = np.full(sizes.size, TRAIN, dtype=np.int8)
    codes[midpoint < bounds[1]] = VAL
    codes[midpoint < bounds[0]] = TEST
    return codes


def _is_in(values: Sequence[str] | pa.Array | pa.ChunkedArray, names: list[str]) -> np.ndarray:
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    found = pc.is_in(array, value_set=pa.array(names, pa.string()))
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def split_counts(
    codes: np.ndarray,
    stars: Sequence[int] | np.ndarray,
    films: Sequence[str] | pa.Array | pa.ChunkedArray,
    holdout: Iterable[str] = (),
) -> dict[str, object]:
    """Rows per split, star distribution per split, and (with holdout) how many test rows come
    from films that were not held out."""
    stars = np.asarray(stars)
    counts: dict[str, object] = {name: int((codes == i).sum()) for i, name in enumerate(SPLITS)}
    counts["stars"] = {
        name: {str(s): int(((codes == i) & (stars == s)).sum()) for s in range(1, 6)}
        for i, name in enumerate(SPLITS)
    }
    holdout = list(holdout)
    if holdout:
        other = ~_is_in(films, holdout)
        counts["test_from_other_films"] = int(((codes == TEST) & other).sum())
    return counts
