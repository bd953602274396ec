"""Star-mix quantifiers and adapted classifiers under the artificial-prevalence protocol (APP), on
each shared corpus left out.

    python benchmarks/quantify.py [--run three] [--runs-dir DIR]
                                  [--models tfidf_lr,ensemble_head_tfidf] [--size 1000] [--reps 5]

For each fold of the ``source_holdout`` evaluation (one corpus of a multi-corpus run left out),
every model is refitted on the other corpora with the evaluation's own fitters and predicts the
left-out corpus and its fold's validation reviews (probabilities calibrated by the temperature
fitted there, as ``--adapt-prior`` does). Then, for each target star mix (balanced, the corpus's
own, low, high, and 80% four-and-five stars), ``--reps`` samples of ``--size`` reviews are drawn
with exactly those star shares, and measured:

- each quantifier's corpus star-mix L1 error (``cc``, ``pcc``, ``acc``, ``pacc``, ``em``, and
  ``map_em``: EM under the Dirichlet prior per-review adaptation uses);
- the median per-film mean-star error of each quantifier over films with >= 20 sampled reviews;
- per-review QWK unadapted, with plain EM and with the shipped adaptation (MAP-EM + the guard),
  and the largest share of reviews on one star for each.

Goals (issue 26): per-film error <= .30 and mix L1 <= .10 at every mix; adapted QWK >= unadapted
- .02 at every mix and higher at the skewed ones; no adapted pile over 60% unless the true mix
has one. Writes benchmarks/results/quantify.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.artifacts import write_json  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.modeling.calibration import fit_calibration  # noqa: E402
from pipeline.modeling.metrics import quadratic_weighted_kappa  # noqa: E402
from pipeline.modeling.prior import (  # noqa: E402
    EM_STRENGTH,
    adapt_probs,
    em_prior,
    implied_prior,
    prior_of,
    star_piles,
)
from pipeline.modeling.quantify import (  # noqa: E402
    APP_MIXES,
    METHODS,
    app_sample,
    estimate,
    mean_star,
)
from pipeline.predict.adapt import fit_adaptation  # noqa: E402
from pipeline.training.data import TrainingData  # noqa: E402
from pipeline.training.evaluations import make_folds  # noqa: E402
from pipeline.training.fold_fitters import FITTERS, fit_order  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "quantify.json"
MIXES = APP_MIXES
QUANTIFIERS = (*METHODS, "map_em")
MIN_FILM = 20
console = Console(stderr=True)


def quantify(method: str, probs: np.ndarray, start: np.ndarray, val: tuple[Any, Any]) -> Any:
    if method == "map_em":
        return em_prior(probs, start, strength=EM_STRENGTH)[1]
    return estimate(method, probs, train_prior=start, val_stars=val[0], val_probs=val[1])


def measure(
    stars: np.ndarray,
    films: np.ndarray,
    probs: np.ndarray,
    start: np.ndarray,
    val: Any,
    per_review: bool,
    raw: np.ndarray,
) -> dict[str, Any]:
    """One APP sample's figures; ``shipped`` is what `douban score --adapt-prior` answers:
    each review re-weighted only where the fold's validation check said it helps, else the
    model's own (uncalibrated, ``raw``) probabilities, as scoring without adaptation gives."""
    true = np.bincount(stars - 1, minlength=5) / len(stars)
    row: dict[str, Any] = {
        f"l1_{m}": float(np.abs(quantify(m, probs, start, val) - true).sum()) for m in QUANTIFIERS
    }
    errors: dict[str, list[float]] = {m: [] for m in QUANTIFIERS}
    for film in np.unique(films):
        sel = films == film
        if sel.sum() < MIN_FILM:
            continue
        truth = mean_star(np.bincount(stars[sel] - 1, minlength=5) / sel.sum())
        for m in QUANTIFIERS:
            errors[m].append(abs(mean_star(quantify(m, probs[sel], start, val)) - truth))
    row |= {f"film_{m}": float(np.median(e)) if e else None for m, e in errors.items()}
    row["films"] = len(errors["cc"])
    for name, out in (
        ("unadapted", raw),
        ("em", em_prior(probs, start)[0]),
        ("adapted", adapted := adapt_probs(probs, start)[0]),
        ("shipped", adapted if per_review else raw),
    ):
        row[f"qwk_{name}"] = quadratic_weighted_kappa(stars, out.argmax(axis=1) + 1)
        row[f"pile_{name}"] = float(star_piles(out).max())
    row["true_pile"] = float(true.max())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="three")
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument("--models", default="tfidf_lr,ensemble_head_tfidf")
    parser.add_argument("--size", type=int, default=1000, help="reviews per APP sample")
    parser.add_argument("--reps", type=int, default=5, help="samples per mix")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    settings = Settings(run_name=args.run, **({"runs_dir": args.runs_dir} if args.runs_dir else {}))
    data = TrainingData.load(settings.paths)
    models = args.models.split(",")
    load_before = os.getloadavg()
    rng = np.random.default_rng(settings.seed)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for fold in make_folds(data.reviews, "source_holdout", seed=settings.seed):
        console.print(f"fold {fold.label}: fitting {', '.join(models)}")
        fitted: dict[str, Any] = {}
        for name in fit_order(models):
            fitted[name] = FITTERS[name](data, fold, settings, fitted)
        for name in models:
            model = fitted[name]
            has = data.input_mask(model.store_needs)
            test, val = fold.test[has[fold.test]], fold.val[has[fold.val]]
            val_probs = model.predict(data.source, val).probs
            calibration = fit_calibration(val_probs, data.stars[val])
            raw = model.predict(data.source, test).probs
            probs = calibration.apply(raw)
            checks = (data.stars[val], calibration.apply(val_probs))
            start = implied_prior(model.config, prior_of(data.stars[fold.train]),
                                  lambda m, f=fitted: f[m].config)  # fmt: skip
            val_films = data.reviews["film"].astype(str).to_numpy()[val]
            plan = fit_adaptation(data.stars[val], val_probs, start, val_films)  # as scoring
            chosen = plan.check["best"] if plan.check else "em"  # what a report would pick
            stars = data.stars[test].astype(int)
            films = data.reviews["film"].astype(str).to_numpy()[test]
            own = (np.bincount(stars - 1, minlength=5) / len(stars)).tolist()
            for mix_name, mix in {"own": own, **MIXES}.items():
                for rep in range(args.reps):
                    idx = app_sample(stars, mix, args.size, rng)
                    row = measure(stars[idx], films[idx], probs[idx], start, checks,
                                  plan.per_review, raw[idx])  # fmt: skip
                    row |= {"chosen": chosen, "per_review": plan.per_review,
                            "l1_chosen": row[f"l1_{chosen}"], "film_chosen": row[f"film_{chosen}"]}
                    results.append({"fold": fold.label, "model": name, "mix": mix_name, "rep": rep,
                                    "temperature": calibration.temperature} | row)  # fmt: skip

    summary = summarise(results)
    write_json(args.output, {
        "run": args.run, "models": models, "size": args.size, "reps": args.reps,
        "mixes": MIXES, "summary": summary, "samples": results,
        "goal": {"film_error": 0.30, "mix_l1": 0.10, "qwk_drop": 0.02, "pile": 0.60},
        "seconds": round(time.perf_counter() - started, 1),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    })  # fmt: skip
    show(summary)
    console.print(f"written {args.output}")


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over reps per (model, fold, mix)."""
    keys = sorted({(r["model"], r["fold"], r["mix"]) for r in results})
    out = []
    for model, fold, mix in keys:
        rows = [r for r in results if (r["model"], r["fold"], r["mix"]) == (model, fold, mix)]
        mean = {
            k: float(np.mean([r[k] for r in rows if r[k] is not None]))
            for k in rows[0]
            if k.startswith(("l1_", "film_", "qwk_", "pile_", "true_"))
            and any(r[k] is not None for r in rows)
        }
        out.append({"model": model, "fold": fold, "mix": mix} | mean)
    return out


def show(summary: list[dict[str, Any]]) -> None:
    table = Table(title="APP on each left-out corpus (means over samples)")
    for column in ("model", "left out", "mix", "best mix L1", "map_em L1", "best film err",
                   "QWK plain / EM / shipped", "pile EM / shipped / true"):  # fmt: skip
        table.add_column(column)
    for s in summary:
        l1 = {m: s[f"l1_{m}"] for m in QUANTIFIERS}
        film = {m: s[f"film_{m}"] for m in QUANTIFIERS if f"film_{m}" in s}
        best_l1, best_film = min(l1, key=l1.get), min(film, key=film.get) if film else None
        table.add_row(
            s["model"], s["fold"], s["mix"], f"{best_l1} {l1[best_l1]:.3f}", f"{l1['map_em']:.3f}",
            f"{best_film} {film[best_film]:.2f}" if best_film else "-",
            f"{s['qwk_unadapted']:.3f} / {s['qwk_em']:.3f} / {s['qwk_shipped']:.3f}",
            f"{s['pile_em']:.0%} / {s['pile_shipped']:.0%} / {s['true_pile']:.0%}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
