"""A deterministic Douban-style demo corpus, because real reviews cannot ship with the project.

The CSV has the full DMSC (Kaggle "Douban Movie Short Comments") header, so the demo goes
through exactly the ingest that real data goes through. Its text is built from per-star
fragments (verdicts, aspect clauses with intensifiers and negation, sarcasm, emoji, English)
combined at random, with the label noise of real raters: about 15% of reviews are worded like an
adjacent star and a few per cent like the opposite polarity, so the task is learnable but not
trivial. Films differ in quality prior, review count (one has only ~15 reviews) and release date;
likes are heavy-tailed and favour reviews that agree with the film's overall reception. About
0.5% of rows are bad on purpose (empty or blank comment, star 0 or missing, duplicates), and a
few carry HTML or a URL, so rejects, cleaning and dedupe are exercised too. The ingest recognises
the demo by its file name (``demo_reviews*``); nothing inside the file marks it.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

from pipeline.artifacts import atomic_path
from pipeline.config import PROJECT_ROOT
from pipeline.data.demo_words import (
    ASPECTS,
    CONTRASTS,
    EMOJI,
    ENDINGS,
    ENGLISH,
    ENGLISH_ADJECTIVES,
    ENGLISH_ASPECTS,
    ENGLISH_INTENSIFIERS,
    FILMS,
    HANDLE_SUFFIXES,
    INTENSIFIERS,
    LAUGH,
    MIDDLING,
    NEGATIONS,
    NEUTRAL,
    PERSON_ADJECTIVES,
    PERSON_NEUTRAL,
    SARCASM,
    SENTENCE_ENDS,
    SEPARATORS,
    SHAPES,
    SMALL_FILM_SHARE,
    STORY,
    SUMMINGS_UP,
    SYLLABLES,
    TINY,
    VERDICTS,
    DemoFilm,
)
from pipeline.errors import InputError

DEMO_CSV_NAME = "demo_reviews.csv"
HEADER = (
    "ID", "Movie_Name_EN", "Movie_Name_CN", "Crawl_Date", "Number",
    "Username", "Date", "Star", "Comment", "Like",
)  # fmt: skip
MIN_REVIEWS = 100  # below this some films would get no review at all
MAX_CHARS = 350  # Douban caps short comments at 350 characters
FIRST_DATE = date(2014, 1, 1)
CRAWL_DATE = date(2018, 6, 30)
NOISE_RATE = 0.001  # share of rows per kind of noise (five bad kinds, HTML, URL)
ADJACENT_WORDING = 0.15  # reviews worded like a neighbouring star
OPPOSITE_WORDING = 0.03  # reviews worded like the opposite polarity
CLAUSE_JITTER = 0.2  # single clauses drifting to a neighbouring star's wording
MAX_LIKES = 20_000


def default_demo_path() -> Path:
    return PROJECT_ROOT / "data" / "generated" / DEMO_CSV_NAME


@dataclass(frozen=True)
class _Review:
    film: DemoFilm
    date: date
    star: int | None  # None, like 0, only in a bad-on-purpose row
    comment: str
    like: int
    username: str


def generate_demo_corpus(path: Path, n_reviews: int = 6000, seed: int = 0) -> Path:
    """Write ``n_reviews`` data rows (bad-on-purpose rows included) as a DMSC CSV at ``path``.

    The same seed gives a byte-identical file."""
    if n_reviews < MIN_REVIEWS:
        raise InputError(
            f"n_reviews={n_reviews} is too small: use at least {MIN_REVIEWS} so every film has "
            "reviews"
        )
    rng = random.Random(seed)
    per_kind = max(1, round(n_reviews * NOISE_RATE))
    reviews = [
        _review(rng, film)
        for film, count in zip(FILMS, _film_counts(n_reviews - per_kind), strict=True)
        for _ in range(count)
    ]
    reviews = _add_noise(rng, reviews, per_kind)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(_rows(reviews))
    return path


def _film_counts(n: int) -> list[int]:
    """Reviews per film: the small film gets its fixed share, the rest split by weight."""
    small = max(3, round(n * SMALL_FILM_SHARE))
    total_weight = sum(film.weight for film in FILMS)
    exact = [(n - small) * film.weight / total_weight for film in FILMS]
    counts = [int(x) if film.weight else small for x, film in zip(exact, FILMS, strict=True)]
    by_remainder = sorted(range(len(FILMS)), key=lambda i: int(exact[i]) - exact[i])
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _review(rng: random.Random, film: DemoFilm) -> _Review:
    star = rng.choices(range(1, 6), weights=film.star_prior)[0]
    comment = _comment(rng, film, _wording_star(rng, star))
    return _Review(
        film=film,
        date=_review_date(rng, film),
        star=star,
        comment=comment,
        like=_likes(rng, star, film.mean_star, len(comment)),
        username=_username(rng),
    )


def _wording_star(rng: random.Random, star: int) -> int:
    """The star whose wording a review uses: real raters do not always write what they rate."""
    r = rng.random()
    if r < OPPOSITE_WORDING:
        return 6 - star if star != 3 else rng.choice((1, 5))
    if r < OPPOSITE_WORDING + ADJACENT_WORDING:
        return _neighbour(rng, star)
    return star


def _neighbour(rng: random.Random, star: int) -> int:
    return min(5, star + 1) if star == 1 or (star < 5 and rng.random() < 0.5) else star - 1


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([value for value, _ in weighted], weights=[w for _, w in weighted])[0]


# --- comment text ------------------------------------------------------------------------------
def _comment(rng: random.Random, film: DemoFilm, level: int) -> str:
    shape = _pick(rng, SHAPES)
    if shape == "tiny":
        return rng.choice(TINY[level]) + (_pick(rng, ENDINGS) if rng.random() < 0.3 else "")
    if shape == "long":
        return _long_comment(rng, film, level)
    parts = [_clause(rng, film, level) for _ in range(rng.randint(1, 2))]
    if shape == "medium":
        contrasted = level in (2, 3, 4)
        parts.append(_contrast(rng, film, level) if contrasted else _clause(rng, film, level))
        if rng.random() < 0.5:
            parts.append(rng.choice(VERDICTS[level]))
    if rng.random() < 0.2:
        parts.insert(0, _neutral(rng, film))
    if level <= 2 and rng.random() < (0.12 if level == 1 else 0.04):
        parts.append(rng.choice(SARCASM))
    if rng.random() < 0.08:
        parts.append(_english(rng, level))
    text = _join(rng, parts) + _pick(rng, ENDINGS)
    return text + _emoji(rng, level) if rng.random() < 0.12 else text


def _long_comment(rng: random.Random, film: DemoFilm, level: int) -> str:
    """150-350 characters of sentences; now and then split into two paragraphs."""
    target = rng.randint(150, 280)
    bodies = [f"{rng.choice(NEUTRAL)}，{rng.choice(film.context)}"]
    length = len(bodies[0])
    while length < target:
        kind = rng.random()
        if kind < 0.3:
            body = rng.choice(STORY[_jitter(rng, level)])
        elif kind < 0.55 and level in (2, 3, 4):
            body = _contrast(rng, film, level)
        else:
            body = "，".join(_clause(rng, film, level) for _ in range(rng.randint(2, 3)))
        if body not in bodies:
            bodies.append(body)
            length += len(body) + 1
    bodies.append(rng.choice(SUMMINGS_UP) + rng.choice(VERDICTS[level]))
    sentences = [body + rng.choice(SENTENCE_ENDS) for body in bodies]
    if rng.random() < 0.2:
        cut = rng.randint(1, len(sentences) - 1)
        sentences[cut] = "\n" + sentences[cut]
    return "".join(sentences)[:MAX_CHARS]


def _clause(rng: random.Random, film: DemoFilm, level: int) -> str:
    """One sentiment clause worded like ``level`` (give or take a neighbouring star)."""
    level = _jitter(rng, level)
    if rng.random() < 0.3:
        return rng.choice(VERDICTS[level])
    return _aspect_clause(rng, film, level)


def _aspect_clause(rng: random.Random, film: DemoFilm, level: int) -> str:
    """What a reviewer thinks of one part of the film or one person in it."""
    if rng.random() < 0.35:
        subject = rng.choice(film.people)
        adjectives = PERSON_ADJECTIVES
        if rng.random() < 0.3:
            subject, adjectives = f"{subject}的演技", ASPECTS["演技"]
    else:
        subject = rng.choice(list(ASPECTS))
        adjectives = ASPECTS[subject]
    return subject + _predicate(rng, level, adjectives)


def _predicate(rng: random.Random, level: int, adjectives: tuple[tuple[str, ...], ...]) -> str:
    """Intensifier + adjective, or a negated adjective of the other polarity, or a middling word."""
    if level == 3:
        return rng.choice(MIDDLING)
    positive, negative = adjectives
    wanted, other = (positive, negative) if level >= 4 else (negative, positive)
    if rng.random() < 0.25:
        return rng.choice(NEGATIONS[level]) + rng.choice(other)
    intensifier = rng.choice(INTENSIFIERS[level])
    return intensifier + rng.choice(wanted) + ("了" if intensifier == "太" else "")


def _contrast(rng: random.Random, film: DemoFilm, level: int) -> str:
    """Two clauses pulling apart: the stuff of 2-, 3- and 4-star reviews."""
    good = _aspect_clause(rng, film, 4)
    bad = _aspect_clause(rng, film, _jitter(rng, 2))
    if level == 4:
        first, second = good, bad
    elif level == 2:
        aspect = rng.choice(list(ASPECTS))
        first, second = rng.choice((f"除了{aspect}还行", f"{aspect}倒是还可以", good)), bad
    else:
        first, second = (good, bad) if rng.random() < 0.5 else (bad, good)
    return f"{first}，{rng.choice(CONTRASTS)}{second}"


def _jitter(rng: random.Random, level: int) -> int:
    return _neighbour(rng, level) if rng.random() < CLAUSE_JITTER else level


def _neutral(rng: random.Random, film: DemoFilm) -> str:
    r = rng.random()
    if r < 0.2:
        return rng.choice(PERSON_NEUTRAL).format(rng.choice(film.people))
    if r < 0.4:
        return rng.choice(film.context)
    return rng.choice(NEUTRAL)


def _english(rng: random.Random, level: int) -> str:
    if rng.random() < 0.5:
        return rng.choice(ENGLISH[level])
    aspect = rng.choice(ENGLISH_ASPECTS)
    return f"{aspect} {rng.choice(ENGLISH_INTENSIFIERS)} {rng.choice(ENGLISH_ADJECTIVES[level])}"


def _emoji(rng: random.Random, level: int) -> str:
    symbol = LAUGH if rng.random() < 0.2 else rng.choice(EMOJI[level])
    return symbol * rng.choice((1, 1, 2, 3))


def _join(rng: random.Random, parts: list[str]) -> str:
    text = parts[0]
    for part in parts[1:]:
        text += _pick(rng, SEPARATORS) + part
    return text


# --- metadata ----------------------------------------------------------------------------------
def _review_date(rng: random.Random, film: DemoFilm) -> date:
    """Most reviews come in the weeks after release, a few at previews, a tail for years."""
    if film.release < FIRST_DATE:  # an older film: re-watches spread over the whole window
        start, lag = FIRST_DATE, rng.expovariate(1 / 500)
    else:
        start = film.release
        r = rng.random()
        if r < 0.03:
            lag = -rng.randint(1, 10)
        elif r < 0.75:
            lag = rng.expovariate(1 / 12)
        else:
            lag = rng.expovariate(1 / 250)
    day = start + timedelta(days=int(lag))
    span = (CRAWL_DATE - start).days
    return day if day <= CRAWL_DATE else start + timedelta(days=rng.randint(0, span))


def _likes(rng: random.Random, star: int, film_mean: float, length: int) -> int:
    """Mostly 0-5, a few in the thousands; popular reviews agree with the film's reception and
    say more than a word or two."""
    agreement = min(1.0, max(0.0, 0.5 + (star - 3) * (film_mean - 3) / 2))
    p_popular = 0.002 + 0.05 * agreement**2 * min(1.0, 0.2 + length / 60)
    if rng.random() < p_popular:
        return min(MAX_LIKES, int(30 * rng.paretovariate(0.8)))
    return int(rng.paretovariate(1.4)) - 1


def _username(rng: random.Random) -> str:
    name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
    style = rng.random()
    if style < 0.35:
        return f"{name}{rng.randint(1, 9999)}"
    if style < 0.5:
        return name.capitalize()
    if style < 0.6:
        return f"{name}_{rng.choice(HANDLE_SUFFIXES)}"
    return name


# --- bad on purpose ----------------------------------------------------------------------------
def _add_noise(rng: random.Random, reviews: list[_Review], n: int) -> list[_Review]:
    """Spoil ``n`` reviews per kind and append ``n`` re-crawled duplicates (rows repeated whole)."""
    spoilers = (
        lambda r: replace(r, comment=""),
        lambda r: replace(r, comment=rng.choice((" ", "   ", "\u3000", " \t "))),
        lambda r: replace(r, star=0),
        lambda r: replace(r, star=None),
        lambda r: replace(r, comment=_with_html(rng, r.comment)),
        lambda r: replace(r, comment=_with_url(rng, r.comment)),
    )
    chosen = rng.sample(range(len(reviews)), n * (len(spoilers) + 1))
    spoiled = list(reviews)
    for k, spoil in enumerate(spoilers):
        for i in chosen[k * n : (k + 1) * n]:
            spoiled[i] = spoil(reviews[i])
    duplicates = [reviews[i] for i in chosen[len(spoilers) * n :]]
    return spoiled + duplicates


def _with_html(rng: random.Random, comment: str) -> str:
    forms = (
        comment.replace("，", "<br>", 1) if "，" in comment else comment + "<br/>",
        f"&quot;{comment}&quot;",
        f"<b>{comment}</b>",
        f"{comment}&nbsp;&amp;&nbsp;推荐",
    )
    return rng.choice(forms)


def _with_url(rng: random.Random, comment: str) -> str:
    review_id = rng.randint(7_000_000, 9_999_999)
    return f"{comment} 长评见 https://movie.douban.com/review/{review_id}/"


def _rows(reviews: list[_Review]) -> list[list[object]]:
    """Film by film, most-liked first (the order Douban lists them in), with running IDs."""
    rows: list[list[object]] = []
    for film in FILMS:
        of_film = sorted((r for r in reviews if r.film is film), key=lambda r: -r.like)
        for number, r in enumerate(of_film, start=1):
            rows.append([
                len(rows), film.en, film.cn, CRAWL_DATE.isoformat(), number, r.username,
                r.date.isoformat(), "" if r.star is None else r.star, r.comment, r.like,
            ])  # fmt: skip
    return rows
