"""Lab costs on real reviews: fine-tuning time per 1,000 reviews and the full probe sweep.

1. Fine-tuning: ``--reviews`` cleaned reviews of dmsc_sample.csv, one epoch of the project's
   ``tuning.train`` (batch 32, length-bucketed, AdamW + warm-up) with the word embeddings frozen
   (the default) and, with ``--unfrozen``, trainable, so the cost of that choice is measured;
   plus inference time per 1,000 reviews.
2. Probe sweep: one logistic-regression probe per layer for the frozen and the fine-tuned encoder
   (``probes.probe_layers``) on the sentence vectors ``douban lab`` cached for ``--run``; without
   a cache, the frozen vectors of ``--probe-train`` + ``--probe-eval`` reviews are encoded first
   (that time is reported separately).

    python benchmarks/lab.py [--reviews 256] [--unfrozen] [--run ft_sample] [--threads 2]

Writes benchmarks/results/lab.json and prints a table.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch
from rich.console import Console
from rich.table import Table

from pipeline.artifacts import write_json
from pipeline.config import PROJECT_ROOT, FinetuneSettings, RunPaths
from pipeline.data.text import clean_text
from pipeline.encoding.encode import encode_texts
from pipeline.encoding.load import EMBEDDED_ENCODER, load_encoder
from pipeline.lab.probes import probe_layers
from pipeline.modeling.batching import stratified_subset
from pipeline.modeling.sentence import SentenceModel, predict
from pipeline.training.tuning import train

DATA = PROJECT_ROOT.parent / "shared" / "data" / "dmsc_sample.csv"
RESULTS = Path(__file__).resolve().parent / "results" / "lab.json"
console = Console()


def load_reviews(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` cleaned, non-empty real reviews with their stars, stratified by star."""
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found: the benchmark needs the shared real reviews")
    frame = pd.read_csv(DATA, usecols=["Star", "Comment"]).dropna()
    frame = frame.assign(text=frame["Comment"].astype(str).map(clean_text))
    frame = frame[frame["text"].str.len() > 0].reset_index(drop=True)
    rows = stratified_subset(frame["Star"].to_numpy(), n, seed)
    return frame["text"].iloc[rows].tolist(), frame["Star"].to_numpy(np.int64)[rows]


def time_finetuning(texts: list[str], stars: np.ndarray, freeze: bool) -> dict[str, Any]:
    encoder = load_encoder(EMBEDDED_ENCODER)
    model = SentenceModel(encoder.model, encoder.spec.pooling, "classification")
    settings = FinetuneSettings(epochs=1, eval_every=10**9, freeze_embeddings=freeze)
    rss_before = psutil.Process().memory_info().rss
    report = train(
        model, encoder, texts, stars, texts[:32], stars[:32], settings, seed=0, progress=True
    )
    start = time.perf_counter()
    predict(model, encoder, texts, max_length=settings.max_length)
    infer = time.perf_counter() - start
    return {
        "freeze_embeddings": freeze,
        "trainable_parameters": report.trainable_parameters,
        "steps": report.steps,
        "tokens": report.train_tokens,
        "train_s_per_1000_reviews": round(report.seconds_per_1000_reviews, 1),
        "predict_s_per_1000_reviews": round(1000 * infer / len(texts), 1),
        "rss_growth_mb": round((psutil.Process().memory_info().rss - rss_before) / 2**20),
    }


def cached_vectors(run: RunPaths) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Sentence vectors ``douban lab`` cached per model, and the stars of their reviews."""
    vectors, labels = {}, {}
    stars = pd.read_parquet(run.reviews, columns=["star"])["star"].to_numpy(np.int64)
    for path in sorted(run.lab.glob("pooled-*.npz")):
        with np.load(path) as data:
            vectors[path.stem.removeprefix("pooled-")] = {
                k: data[k].astype(np.float32) for k in ("train", "eval")
            }
            labels = {k: stars[data[f"{k}_rows"]] for k in ("train", "eval")}
    return vectors, labels


def time_probes(run: RunPaths, n_train: int, n_eval: int, seed: int) -> dict[str, Any]:
    result: dict[str, Any] = {"run": run.name}
    vectors, labels = cached_vectors(run) if run.lab.exists() else ({}, {})
    result["vectors"] = "lab cache"
    if not vectors:
        texts, stars = load_reviews(n_train + n_eval, seed)
        start = time.perf_counter()
        encoded = encode_texts(
            load_encoder(EMBEDDED_ENCODER),
            texts,
            token_layers=[-1],
            max_length=256,
            progress=True,
        )
        pooled = np.stack([e.pooled_mean for e in encoded])
        result["encode_seconds"] = round(time.perf_counter() - start, 1)
        vectors = {"frozen": {"train": pooled[:n_train], "eval": pooled[n_train:]}}
        labels = {"train": stars[:n_train], "eval": stars[n_train:]}
        result["vectors"] = "encoded (no lab cache)"
    start = time.perf_counter()
    result["accuracy"] = {}
    for name, v in vectors.items():
        curve = probe_layers(v["train"], labels["train"], v["eval"], labels["eval"], desc=name)
        result["accuracy"][name] = [round(a, 4) for a in curve.accuracy]
    result["probe_seconds"] = round(time.perf_counter() - start, 1)
    result["models"] = list(vectors)
    result["layers"] = int(next(iter(vectors.values()))["train"].shape[1])
    result["n_train"], result["n_eval"] = len(labels["train"]), len(labels["eval"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", type=int, default=256, help="reviews to fine-tune on")
    parser.add_argument("--unfrozen", action="store_true", help="also time trainable embeddings")
    parser.add_argument("--run", default="ft_sample", help="run whose lab cache to probe")
    parser.add_argument("--probe-train", type=int, default=3000)
    parser.add_argument("--probe-eval", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-finetune", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
            "load_average": list(psutil.getloadavg()),
        },
    }
    if not args.skip_finetune:
        texts, stars = load_reviews(args.reviews, seed=0)
        result["finetune"] = [time_finetuning(texts, stars, freeze=True)]
        if args.unfrozen:
            result["finetune"].append(time_finetuning(texts, stars, freeze=False))
    run = RunPaths(PROJECT_ROOT / "runs" / args.run)
    result["probes"] = time_probes(run, args.probe_train, args.probe_eval, seed=0)
    write_json(RESULTS, result)

    table = Table(title="lab benchmark")
    table.add_column("what")
    table.add_column("value", justify="right")
    for row in result.get("finetune", []):
        tag = "frozen" if row["freeze_embeddings"] else "trainable"
        table.add_row(
            f"fine-tune, embeddings {tag}: s / 1,000 reviews",
            f"{row['train_s_per_1000_reviews']:.1f}",
        )
        table.add_row(
            f"  predict: s / 1,000 reviews ({tag})", f"{row['predict_s_per_1000_reviews']:.1f}"
        )
        table.add_row(f"  trainable parameters ({tag})", f"{row['trainable_parameters']:,}")
    probes = result["probes"]
    table.add_row(
        f"probe sweep: {probes['layers']} layers x {len(probes['models'])} models "
        f"({probes['n_train']} train / {probes['n_eval']} eval)",
        f"{probes['probe_seconds']:.1f} s",
    )
    if "encode_seconds" in probes:
        table.add_row("  encoding the probe reviews first", f"{probes['encode_seconds']:.1f} s")
    table.add_row(
        "load average at start", " ".join(f"{x:.1f}" for x in result["machine"]["load_average"])
    )
    console.print(table)
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
