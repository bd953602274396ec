"""Named evaluations that say how a model does on films and crawls it never saw.

- ``random``: the run's own train/val/test split (films shared between train and test);
- ``film_holdout``: the films are dealt (seeded, round-robin within each source, so every fold
  holds films of every corpus) into ``folds`` groups; each group is tested by models trained on
  the other films, and every review is tested once;
- ``source_holdout``: leave one corpus out (the ``source`` of each review: its file name, or its
  CSV's Source column): train on the other corpora, test on it.

In the two held-out evaluations the validation split (early stopping, ensemble weight, the
confusion rates of adjusted counts) is itself made of held-out films of the training corpora, so
every choice is made away from the training films. Models are refitted per fold on the run's
feature store (no new encoding). Figures come with bootstrap 95% intervals, per source, with and
without prior adaptation (EM over each tested corpus), and with per-film quantification errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import read_json
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.modeling.calibration import Calibration, fit_calibration
from pipeline.modeling.inputs import Predictions
from pipeline.modeling.metrics import bootstrap_ci, headline, star_metrics
from pipeline.modeling.prior import adapt_predictions, implied_prior, prior_of
from pipeline.modeling.quantify import film_estimates, summarise
from pipeline.modeling.spec import write_metrics
from pipeline.training.data import TrainingData
from pipeline.training.fold_fitters import FITTERS, Fold, fit_order
from pipeline.training.train import ALL_MODELS

log = logging.getLogger(__name__)

EVALUATIONS = ("random", "film_holdout", "source_holdout")
CI_METRICS = ("accuracy", "off_by_one", "mae", "qwk")
VAL_FILM_SHARE = 0.15  # of each training corpus's films, held out for validation


def _deal_films(films: pd.Series, sources: pd.Series, groups: int, seed: int) -> dict[str, int]:
    """Film -> group, shuffled with ``seed`` and dealt round-robin within each source (largest
    films first, so the groups get similar review counts)."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"film": films, "source": sources})
    out: dict[str, int] = {}
    start = 0
    for _, part in table.groupby("source", sort=True):
        sizes = part["film"].value_counts()
        names = sizes.index.to_numpy()[rng.permutation(len(sizes))]
        names = sorted(names, key=lambda f: -sizes[f])  # stable: ties keep the shuffled order
        for i, film in enumerate(names):
            out.setdefault(film, (start + i) % groups)
        start += len(names)
    return out


def _val_films(reviews: pd.DataFrame, pool: np.ndarray, seed: int) -> np.ndarray:
    """Rows of ``pool`` whose films form the validation split: about VAL_FILM_SHARE of each
    corpus's films (at least one where a corpus has three or more)."""
    sub = reviews.iloc[pool]
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for _, part in sub.groupby("source", sort=True):
        films = np.asarray(sorted(part["film"].unique()), dtype=object)
        k = round(len(films) * VAL_FILM_SHARE) or (1 if len(films) >= 3 else 0)
        chosen += list(rng.choice(films, size=k, replace=False))
    return pool[sub["film"].isin(chosen).to_numpy()]


def make_folds(reviews: pd.DataFrame, evaluation: str, folds: int = 3, seed: int = 0) -> list[Fold]:
    """The train / val / test rows of each round of ``evaluation`` (see the module docstring)."""
    if evaluation not in EVALUATIONS:
        raise InputError(f"unknown evaluation {evaluation!r}; choose from {list(EVALUATIONS)}")
    rows = np.arange(len(reviews))
    if evaluation == "random":
        split = reviews["split"].to_numpy()
        return [Fold("random", *(rows[split == s] for s in ("train", "val", "test")))]
    out = []
    if evaluation == "film_holdout":
        films = reviews["film"].astype(str)
        if films.nunique() < 2:
            raise InputError("film_holdout needs at least two films in the run")
        group = films.map(_deal_films(films, reviews["source"], min(folds, films.nunique()), seed))
        for g in sorted(group.unique()):
            test = rows[(group == g).to_numpy()]
            pool = rows[(group != g).to_numpy()]
            val = _val_films(reviews, pool, seed + int(g))
            films_tested = sorted(films.iloc[test].unique())
            out.append(
                Fold(
                    f"films {g + 1}: {len(films_tested)} films", np.setdiff1d(pool, val), val, test
                )
            )
        return out
    sources = reviews["source"].astype(str)
    if sources.nunique() < 2:
        raise InputError(
            f"source_holdout needs reviews from at least two corpora; the run has "
            f"{sources.nunique()}",
            hint="prepare with several inputs: `douban prepare --input a.csv --input b.csv`",
        )
    for name in sorted(sources.unique()):
        test = rows[(sources == name).to_numpy()]
        pool = rows[(sources != name).to_numpy()]
        val = _val_films(reviews, pool, seed)
        out.append(Fold(name, np.setdiff1d(pool, val), val, test))
    return out


def _with_ci(stars: np.ndarray, pred: np.ndarray, probs: np.ndarray | None) -> dict[str, Any]:
    out = star_metrics(stars, pred, probs)
    out["ci95"] = bootstrap_ci(stars, pred)
    return out


# --- the evaluation ------------------------------------------------------------------------


@dataclass
class _Tested:
    """One model's test predictions over all folds (rows in test order), adapted or not."""

    rows: list[np.ndarray]
    preds: list[Predictions]
    adapted: list[Predictions]
    val_rows: list[np.ndarray]
    val_probs: list[np.ndarray | None]
    train_rows: list[np.ndarray]
    priors: list[np.ndarray]  # the star mix each fold's model assumes (implied_prior)


def _adapt_by_source(
    pred: Predictions, sources: np.ndarray, train_prior: np.ndarray, calibration: Calibration
) -> Predictions:
    """EM prior adaptation run separately over each tested corpus (its star mix is its own),
    on probabilities calibrated on the fold's validation reviews."""
    parts = [np.flatnonzero(sources == s) for s in pd.unique(sources)]
    order = np.concatenate(parts)
    adapted = Predictions.concat(
        [adapt_predictions(_take(pred, rows), train_prior, calibration) for rows in parts]
    )
    return _take(adapted, np.argsort(order))


def _take(pred: Predictions, rows: np.ndarray) -> Predictions:
    return Predictions(
        pred.pred_star[rows],
        pred.score[rows],
        None if pred.probs is None else pred.probs[rows],
        None if pred.attention is None else [pred.attention[i] for i in rows],
    )


def _section(data: TrainingData, tested: dict[str, _Tested]) -> dict[str, Any]:
    """Pooled test figures of every model, plain and prior-adapted, per source, per film, with
    the per-film quantification."""
    reviews = data.reviews
    out: dict[str, Any] = {"models": {}, "adapted": {}, "quantification": {}, "films": {}}
    for name, t in tested.items():
        rows = np.concatenate(t.rows)
        pred = Predictions.concat(t.preds)
        stars = data.stars[rows]
        sources = reviews["source"].astype(str).to_numpy()[rows]
        films = reviews["film"].astype(str).to_numpy()[rows]
        entry: dict[str, Any] = {
            "test": _with_ci(stars, pred.pred_star, pred.probs),
            "by_source": _by_source(stars, pred.pred_star, sources),
        }
        entry["per_film"] = {
            "test": {
                f: star_metrics(stars[films == f], pred.pred_star[films == f])
                for f in sorted(set(films))
            }
        }
        out["models"][name] = entry
        if pred.probs is None:
            continue
        adapted = Predictions.concat(t.adapted)
        out["adapted"][name] = {
            "test": _with_ci(stars, adapted.pred_star, adapted.probs),
            "by_source": _by_source(stars, adapted.pred_star, sources),
        }
        est = _film_estimates(data, t)
        out["quantification"][name] = summarise(est)
        out["films"][name] = _estimates_json(est)
    return out


def _by_source(stars: np.ndarray, pred: np.ndarray, sources: np.ndarray) -> dict[str, Any]:
    return {
        s: _with_ci(stars[sources == s], pred[sources == s], None) for s in sorted(set(sources))
    }


def _film_estimates(data: TrainingData, t: _Tested) -> pd.DataFrame:
    """Per-film estimates, each fold's films quantified with that fold's train and val."""
    films = data.reviews["film"].astype(str).to_numpy()
    parts = [
        film_estimates(
            films[rows],
            data.stars[rows],
            pred.probs,
            train_stars=data.stars[train],
            val_stars=data.stars[val],
            val_probs=val_probs,
            prior=prior,
        )  # fmt: skip
        for rows, pred, train, val, val_probs, prior in zip(
            t.rows, t.preds, t.train_rows, t.val_rows, t.val_probs, t.priors, strict=True
        )
    ]
    return pd.concat(parts, ignore_index=True)


def _estimates_json(est: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of :func:`film_estimates` in JSON form (arrays as lists, floats rounded)."""
    out = []
    for rec in est.to_dict("records"):
        out.append(
            {
                k: np.round(v, 4).tolist() if isinstance(v, np.ndarray | float) else v
                for k, v in rec.items()
            }
        )
    return out


def run_evaluation(
    data: TrainingData,
    settings: Settings,
    evaluation: str,
    models: Sequence[str],
    folds: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit ``models`` on every fold of ``evaluation`` and measure them on its test rows."""
    if "source" not in data.reviews.columns:
        data.reviews = data.reviews.assign(source="")
    plan = make_folds(data.reviews, evaluation, folds, settings.seed)
    order = fit_order(models)
    tested = {m: _Tested([], [], [], [], [], [], []) for m in models}
    sources = data.reviews["source"].astype(str).to_numpy()
    started = time.perf_counter()
    described = []
    for fold in plan:
        if len(fold.train) == 0 or len(fold.val) == 0 or len(fold.test) == 0:
            raise InputError(
                f"{evaluation} fold {fold.label!r} has an empty train, val or test split "
                f"({len(fold.train)}/{len(fold.val)}/{len(fold.test)} reviews): too few films"
            )
        described.append(
            {"label": fold.label, "train": len(fold.train), "val": len(fold.val),
             "test": len(fold.test),
             "test_films": sorted(data.reviews["film"].astype(str).iloc[fold.test].unique())}
        )  # fmt: skip
        train_prior = prior_of(data.stars[fold.train])
        fitted: dict[str, Any] = {}
        for name in order:
            t0 = time.perf_counter()
            fitted[name] = FITTERS[name](data, fold, settings, fitted)
            if progress:
                log.info("%s %s: %s fitted in %.0f s", evaluation, fold.label, name,
                         time.perf_counter() - t0)  # fmt: skip
            if name not in tested:
                continue
            test, val = fold.test, fold.val
            has = data.input_mask(fitted[name].store_needs)  # encoder models: encoded reviews
            test, val = test[has[test]], val[has[val]]
            pred = fitted[name].predict(data.source, test)
            t = tested[name]
            t.rows.append(test)
            t.preds.append(pred)
            t.train_rows.append(fold.train)
            t.priors.append(
                implied_prior(fitted[name].config, train_prior, lambda m, fit=fitted: fit[m].config)
            )
            t.val_rows.append(val)
            t.val_probs.append(
                None if pred.probs is None else fitted[name].predict(data.source, val).probs
            )
            if pred.probs is not None:
                calibration = fit_calibration(t.val_probs[-1], data.stars[val])
                t.adapted.append(_adapt_by_source(pred, sources[test], t.priors[-1], calibration))
    out = _section(data, tested)
    out |= {
        "evaluation": evaluation,
        "splits": ["test"],
        "folds": described,
        "seed": settings.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return out


def evaluate_named(
    settings: Settings,
    evaluation: str,
    models: Sequence[str] | None = None,
    folds: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """`douban evaluate --evaluation film_holdout|source_holdout`: refit and measure, record the
    section in ``metrics.json["evaluations"][evaluation]`` and print its table."""
    if evaluation == "random":
        raise InputError(
            "the random evaluation scores the run's saved models: run `douban evaluate` "
            "without --evaluation"
        )
    paths = settings.paths
    data = TrainingData.load(paths)
    section = run_evaluation(
        data, settings, evaluation, list(models or ALL_MODELS), folds, progress
    )
    with paths.new_model_set() as new:
        doc = read_json(new.metrics) if new.metrics.exists() else {"run": paths.name}
        doc.setdefault("evaluations", {})[evaluation] = section
        write_metrics(new, doc)
    print_section(section, evaluation)
    return section


def table_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model (and per adapted model, named ``model+prior``): the headline figures
    with their intervals, then per-source QWK."""
    rows = []
    for kind, suffix in (("models", ""), ("adapted", "+prior")):
        for name, entry in section.get(kind, {}).items():
            m = entry["test"]
            row = {"model": name + suffix, "n": m["n"], **headline(m), "ci95": m.get("ci95", {})}
            row["qwk_by_source"] = {s: v["qwk"] for s, v in entry.get("by_source", {}).items()}
            q = section.get("quantification", {}).get(name, {})
            if q and not suffix:
                row["film_mean_abs_error"] = {k: v["median_abs_error"] for k, v in q.items()}
            rows.append(row)
    return rows


def print_section(section: dict[str, Any], evaluation: str) -> None:
    """The evaluation's table on stderr-free stdout: data, one line per model."""
    from rich.console import Console
    from rich.table import Table

    folds = f" of {len(section['folds'])} fold(s)" if "folds" in section else ""
    table = Table(title=f"{evaluation}: test reviews{folds} (+prior: EM-adapted star mix)")
    for col in ("model", "n", "exact", "off-by-one", "MAE", "QWK (95% CI)", "QWK by source"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in sorted(table_rows(section), key=lambda r: -r["qwk"]):
        lo, hi = r["ci95"].get("qwk", [np.nan, np.nan])
        table.add_row(
            r["model"], str(r["n"]), f"{r['accuracy']:.1%}", f"{r['off_by_one']:.1%}",
            f"{r['mae']:.3f}", f"{r['qwk']:.3f} ({lo:.3f}-{hi:.3f})",
            " ".join(f"{s.removesuffix('.csv')} {q:.2f}" for s, q in r["qwk_by_source"].items()),
        )  # fmt: skip
    Console(stderr=True, markup=False).print(table)  # a summary; source names are not markup
