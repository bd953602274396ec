"""How the models travel: every model under ``random``, ``film_holdout`` and ``source_holdout``
on the three shared corpora, with and without prior adaptation, plus per-film quantification.

The run: a sample of each shared corpus, so features extract in CPU time: every film of
dmsc_sample (at most ``--per-film-dmsc`` reviews each: its two huge films are capped, the 26
others keep their 100), every film of douban_2016_4films (at most ``--per-film-4films``) and
``--films`` random films of douban_films_2016_2023 with at least ``--per-film`` reviews
(``--per-film`` each), each film's sample stratified by star. Every film then has >= 50 reviews,
which the per-film mean-star yardstick needs. Or pass ``--run`` (a prepared run with features).

    python benchmarks/generalisation.py [--run DIR] [--models a,b] [--folds 3]

Prints a table and writes benchmarks/results/generalisation.json. At scale, the text models on
every shared corpus (results/generalisation_text.json: 171,360 reviews, 575 films, ~21 min):

    douban prepare -i ../shared/data --sample 90000 --run big
    python benchmarks/generalisation.py --run runs/big --models majority,tfidf_lr,tfidf_ridge \
        --output benchmarks/results/generalisation_text.json
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from pipeline.artifacts import read_manifest, write_json
from pipeline.config import RunPaths, load_settings
from pipeline.training.data import TrainingData
from pipeline.training.evaluations import EVALUATIONS, run_evaluation, table_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
log = logging.getLogger("generalisation")
RESULTS = Path(__file__).resolve().parent / "results" / "generalisation.json"
TEXT_MODELS = ("majority", "tfidf_lr", "tfidf_ridge")
MODELS = "majority,tfidf_lr,tfidf_ridge,pooled_lr,pooled_lr_layers,head_cls,ensemble_head_tfidf"


def sample_corpora(out: Path, films: int, per_film: int, per_film_dmsc: int, per_4films: int,
                   seed: int = 0) -> list[Path]:  # fmt: skip
    """The three sampled CSVs (same file names as the shared ones: the name is the source)."""
    rng = np.random.default_rng(seed)
    plan = [
        ("dmsc_sample.csv", None, per_film_dmsc),
        ("douban_2016_4films.csv", None, per_4films),
        ("douban_films_2016_2023.csv", films, per_film),
    ]
    paths = []
    for name, n_films, cap in plan:
        df = pd.read_csv(DATA / name, dtype=str, keep_default_na=False)
        sizes = df["Movie_Name_CN"].value_counts()
        names = sizes.index.to_numpy()
        if n_films:
            names = rng.choice(sizes[sizes >= cap].index.to_numpy(), n_films, replace=False)
        parts = []
        for film in names:
            rows = df[df["Movie_Name_CN"] == film]
            frac = min(1.0, cap / len(rows))
            parts.append(rows.groupby("Star", group_keys=False).sample(frac=frac, random_state=0))
        paths.append(out / name)
        pd.concat(parts).to_csv(paths[-1], index=False)
    return paths


class TextOnlyData:
    """A prepared run without a feature store: enough for the models that read jieba tokens
    alone (majority, tfidf_*), when features cannot be extracted in the time there is."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self.reviews = pd.read_parquet(paths.reviews)
        self.source = self
        self._tokens = self.reviews["tokens"].tolist()

    @property
    def stars(self) -> np.ndarray:
        return self.reviews["star"].to_numpy().astype(np.int64)

    def tokens(self, rows: Any) -> list[list[str]]:
        return [list(self._tokens[r]) for r in rows]


def build_run(runs_dir: Path, args: argparse.Namespace) -> Path:
    from pipeline.data.prepare import prepare_run
    from pipeline.features.extract import extract_features

    csvs = sample_corpora(
        Path(tempfile.mkdtemp()), args.films, args.per_film, args.per_film_dmsc, args.per_4films
    )
    settings = load_settings(None, run_name="generalisation", runs_dir=runs_dir)
    prepare_run(settings, csvs)
    extract_features(settings)
    return settings.paths.root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run", type=Path, help="a prepared run (else built); without features: text models only"
    )
    parser.add_argument("--runs-dir", type=Path, default=Path(tempfile.gettempdir()) / "gen-runs")
    parser.add_argument("--films", type=int, default=40)
    parser.add_argument("--per-film", type=int, default=55)
    parser.add_argument("--per-film-dmsc", type=int, default=400)
    parser.add_argument("--per-4films", type=int, default=600)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--evaluations", default=",".join(EVALUATIONS))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--head-epochs", type=int, default=8, help="cap per head fit (CPU time)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--tfidf-balanced", type=int, choices=(0, 1), default=1, help="head.tfidf_balanced"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    run_dir = args.run or build_run(args.runs_dir, args)
    settings = load_settings(
        None,
        run_name=run_dir.name,
        runs_dir=run_dir.parent,
        **{"head.epochs": args.head_epochs, "head.tfidf_balanced": bool(args.tfidf_balanced)},
    )
    models = args.models.split(",")
    if read_manifest(settings.paths.features) is None:
        text_only = [m for m in models if m in TEXT_MODELS]
        log.warning("run %s has no features: measuring %s only", run_dir, text_only)
        data: Any = TextOnlyData(settings.paths)
        models = text_only
    else:
        data = TrainingData.load(settings.paths)
    result: dict[str, Any] = {
        "run": str(run_dir),
        "reviews": int(len(data.reviews)),
        "films": int(data.reviews["film"].nunique()),
        "sources": data.reviews["source"].value_counts().sort_index().to_dict(),
        "models": models,
        "head_epochs": args.head_epochs,
        "evaluations": {},
    }
    for evaluation in args.evaluations.split(","):
        started = time.perf_counter()
        section = run_evaluation(data, settings, evaluation, models, args.folds)
        result["evaluations"][evaluation] = {
            "rows": table_rows(section),
            "quantification": section["quantification"],
            "folds": section["folds"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        write_json(args.output, result | {"load_average": os.getloadavg()[0]})
    result |= {"measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_average": os.getloadavg()[0]}
    write_json(args.output, result)
    print_table(result)
    Console(stderr=True).print(f"written {args.output}")


def print_table(result: dict[str, Any]) -> None:
    """QWK (95% CI) and exact per model and evaluation; per-source QWK of source_holdout; the
    median per-film mean-star error of film_holdout (best quantification method)."""
    evs = result["evaluations"]
    table = Table(title=f"generalisation: {result['reviews']:,} reviews, {result['films']} films")
    table.add_column("model")
    for ev in evs:
        table.add_column(f"{ev} QWK [95% CI] / exact", justify="right")
    table.add_column("leave-one-corpus-out QWK", justify="right")
    table.add_column("film mean-star |err| (method)", justify="right")
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for ev, sec in evs.items():
        for row in sec["rows"]:
            by_model.setdefault(row["model"], {})[ev] = row
    for model, rows in by_model.items():
        cells = []
        for ev in evs:
            r = rows.get(ev)
            ci = r["ci95"].get("qwk", [np.nan, np.nan]) if r else [np.nan, np.nan]
            cells.append(f"{r['qwk']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] / {r['accuracy']:.1%}"
                         if r else "-")  # fmt: skip
        src = rows.get("source_holdout", {}).get("qwk_by_source", {})
        cells.append(" ".join(f"{s.split('.')[0][-6:]} {q:.2f}" for s, q in src.items()) or "-")
        quant = rows.get("film_holdout", {}).get("film_mean_abs_error", {})
        best = min(quant, key=quant.get) if quant else None
        cells.append(f"{quant[best]:.3f} ({best})" if best else "-")
        table.add_row(model, *cells)
    Console(width=170).print(table)


if __name__ == "__main__":
    main()
