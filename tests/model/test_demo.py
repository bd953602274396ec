"""The demo corpus: deterministic, DMSC-shaped, star-dependent wording, bad rows on purpose."""

from __future__ import annotations

import csv
import re
import statistics
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline.config import PROJECT_ROOT
from pipeline.data.demo import (
    DEMO_CSV_NAME,
    FILMS,
    MIN_REVIEWS,
    default_demo_path,
    generate_demo_corpus,
)

KAGGLE_HEADER = [
    "ID", "Movie_Name_EN", "Movie_Name_CN", "Crawl_Date", "Number",
    "Username", "Date", "Star", "Comment", "Like",
]  # fmt: skip
STARS = {"1", "2", "3", "4", "5"}
STRONG_POSITIVE = ("神作", "太好看了", "强烈推荐", "满分", "五星", "完美", "amazing")
STRONG_NEGATIVE = ("烂片", "垃圾", "太烂了", "浪费钱", "难看死了", "负分", "so boring")
MIDDLING = ("一般般", "中规中矩", "马马虎虎", "凑合")


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo") / DEMO_CSV_NAME)


@pytest.fixture(scope="module")
def rows(demo_csv: Path) -> list[dict[str, str]]:
    with demo_csv.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == KAGGLE_HEADER
        return list(reader)


@pytest.fixture(scope="module")
def valid(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["Star"] in STARS and r["Comment"].strip()]


def _share(reviews: list[dict[str, str]], words: tuple[str, ...]) -> float:
    return sum(any(w in r["Comment"] for w in words) for r in reviews) / len(reviews)


def _by_star(valid: list[dict[str, str]]) -> dict[int, list[dict[str, str]]]:
    groups: dict[int, list[dict[str, str]]] = defaultdict(list)
    for r in valid:
        groups[int(r["Star"])].append(r)
    return groups


def test_same_seed_gives_a_byte_identical_file(tmp_path: Path) -> None:
    first = generate_demo_corpus(tmp_path / "a" / DEMO_CSV_NAME, n_reviews=1500, seed=7)
    second = generate_demo_corpus(tmp_path / "b" / DEMO_CSV_NAME, n_reviews=1500, seed=7)
    other = generate_demo_corpus(tmp_path / "c" / DEMO_CSV_NAME, n_reviews=1500, seed=8)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_rows_parse_as_a_full_dmsc_csv(rows: list[dict[str, str]]) -> None:
    # embedded newlines, commas and quotes would shift fields or split rows if not quoted
    assert len(rows) == 6000
    assert all(None not in r and None not in r.values() for r in rows)
    assert [int(r["ID"]) for r in rows] == list(range(len(rows)))
    numbers = defaultdict(list)
    for r in rows:
        numbers[r["Movie_Name_CN"]].append(int(r["Number"]))
    assert all(n == list(range(1, len(n) + 1)) for n in numbers.values())
    assert len({r["Crawl_Date"] for r in rows}) == 1
    assert all(r["Username"] and r["Movie_Name_EN"] for r in rows)
    assert any("\n" in r["Comment"] for r in rows)
    assert any("," in r["Comment"] for r in rows)
    assert any('"' in r["Comment"] for r in rows)


def test_films_stars_and_counts(valid: list[dict[str, str]]) -> None:
    assert len(valid) >= 5000
    per_film = Counter(r["Movie_Name_CN"] for r in valid)
    assert len(per_film) >= 8
    assert 5 <= min(per_film.values()) <= 30  # one film with very few reviews
    assert sorted(per_film.values())[1] >= 200
    stars = Counter(int(r["Star"]) for r in valid)
    assert set(stars) == {1, 2, 3, 4, 5}
    assert all(0.05 < n / len(valid) < 0.4 for n in stars.values())
    mean = {
        film: statistics.mean(int(r["Star"]) for r in valid if r["Movie_Name_CN"] == film)
        for film in per_film
    }
    loved = max(FILMS, key=lambda f: f.mean_star).cn
    hated = min(FILMS, key=lambda f: f.mean_star).cn
    assert mean[loved] - mean[hated] > 1.5


def test_wording_depends_on_the_star(valid: list[dict[str, str]]) -> None:
    by_star = _by_star(valid)
    assert _share(by_star[5], STRONG_POSITIVE) > 3 * _share(by_star[1], STRONG_POSITIVE)
    assert _share(by_star[1], STRONG_NEGATIVE) > 3 * _share(by_star[5], STRONG_NEGATIVE)
    middling = {star: _share(group, MIDDLING) for star, group in by_star.items()}
    assert max(middling, key=middling.get) == 3


def test_wording_is_not_a_giveaway(valid: list[dict[str, str]]) -> None:
    """Like real raters, some reviews say the opposite of their star (noise, sarcasm)."""
    by_star = _by_star(valid)
    assert _share(by_star[1], STRONG_POSITIVE) > 0.02
    assert _share(by_star[5], STRONG_NEGATIVE) > 0.005
    assert _share(by_star[5], STRONG_POSITIVE) < 0.9


def test_text_variety(valid: list[dict[str, str]]) -> None:
    lengths = [len(r["Comment"]) for r in valid]
    assert sum(n <= 3 for n in lengths) / len(lengths) > 0.05
    assert sum(150 <= n <= 350 for n in lengths) / len(lengths) > 0.05
    assert max(lengths) <= 350
    comments = [r["Comment"] for r in valid]
    for marker in ("😂", "👍", "😡", "不太", "一点都不", "没有想象中", "呵呵", "，", "！", "～"):
        assert any(marker in c for c in comments), marker
    assert sum(bool(re.search(r"[A-Za-z]{4,}", c)) for c in comments) > 50  # mixed English


def test_bad_rows_are_there_on_purpose(rows: list[dict[str, str]]) -> None:
    comments = [r["Comment"] for r in rows]
    empty = sum(c == "" for c in comments)
    blank = sum(c != "" and not c.strip() for c in comments)
    no_star = sum(r["Star"] in ("", "0") for r in rows)
    # a re-crawled row repeats everything but ID and Number; short comments like "好看" also
    # recur naturally, from different users
    crawled_twice = Counter(
        tuple(r[k] for k in ("Movie_Name_CN", "Comment", "Star", "Username", "Date"))
        for r in rows
        if r["Comment"].strip()
    )
    duplicates = sum(n - 1 for n in crawled_twice.values())
    assert empty >= 1 and blank >= 1
    assert {"", "0"} <= {r["Star"] for r in rows}
    assert duplicates >= 1
    assert any(re.search(r"<[a-z/]|&[a-z]+;", c) for c in comments)
    assert any("https://" in c for c in comments)
    assert (empty + blank + no_star + duplicates) / len(rows) < 0.015


def test_dates_cluster_after_release(valid: list[dict[str, str]]) -> None:
    crawl = date.fromisoformat(valid[0]["Crawl_Date"])
    for film in FILMS:
        days = sorted(date.fromisoformat(r["Date"]) for r in valid if r["Movie_Name_CN"] == film.cn)
        assert date(2014, 1, 1) <= days[0] and days[-1] <= crawl <= date(2018, 12, 31)
        if film.release >= date(2014, 1, 1) and len(days) > 100:
            assert film.release - timedelta(days=14) <= days[0]
            median = days[len(days) // 2]
            assert film.release <= median <= film.release + timedelta(days=60), film.cn


def test_likes_are_heavy_tailed_and_favour_the_consensus(valid: list[dict[str, str]]) -> None:
    likes = [int(r["Like"]) for r in valid]
    assert sum(n <= 5 for n in likes) / len(likes) > 0.8
    assert max(likes) >= 1000
    for film in (max(FILMS, key=lambda f: f.mean_star), min(FILMS, key=lambda f: f.mean_star)):
        of_film = [r for r in valid if r["Movie_Name_CN"] == film.cn]
        top = sorted(of_film, key=lambda r: -int(r["Like"]))[:20]
        top_mean = statistics.mean(int(r["Star"]) for r in top)
        film_mean = statistics.mean(int(r["Star"]) for r in of_film)
        assert (top_mean - 3) * (film_mean - 3) > 0, film.cn


def test_smallest_corpus_still_covers_every_film(tmp_path: Path) -> None:
    path = generate_demo_corpus(tmp_path / DEMO_CSV_NAME, n_reviews=MIN_REVIEWS)
    with path.open(encoding="utf-8", newline="") as f:
        films = Counter(r["Movie_Name_CN"] for r in csv.DictReader(f))
    assert sum(films.values()) == MIN_REVIEWS
    assert set(films) == {film.cn for film in FILMS}


def test_too_few_reviews_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_REVIEWS}"):
        generate_demo_corpus(tmp_path / DEMO_CSV_NAME, n_reviews=MIN_REVIEWS - 1)
    assert not list(tmp_path.iterdir())


def test_write_is_atomic_and_replaces_an_old_file(tmp_path: Path) -> None:
    target = tmp_path / DEMO_CSV_NAME
    target.write_text("stale", encoding="utf-8")
    generate_demo_corpus(target, n_reviews=MIN_REVIEWS)
    assert target.read_text(encoding="utf-8").startswith(",".join(KAGGLE_HEADER) + "\n")
    assert [p.name for p in tmp_path.iterdir()] == [DEMO_CSV_NAME]


def test_default_path_is_recognised_as_the_demo() -> None:
    path = default_demo_path()
    assert path == PROJECT_ROOT / "data" / "generated" / DEMO_CSV_NAME
    assert path.name.startswith("demo_reviews")
