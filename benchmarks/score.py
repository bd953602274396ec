"""Scoring speed on CPU: warm single-review latency (p50/p95/p99) and batch throughput.

    python benchmarks/score.py --run RUN [--model NAME] [--reviews 500] [--batch-reviews 2000]

Reviews come from the real DMSC sample beside the repository when present (else the run's own
prepared reviews). Goal: p50 < 30 ms and p99 < 100 ms per review. Writes
benchmarks/results/score.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from pipeline.artifacts import write_json
from pipeline.config import PROJECT_ROOT, RunPaths
from pipeline.predict.scorer import Scorer, find_trained_run

REAL_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "dmsc_sample.csv"
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "score.json"


def sample_reviews(run_dir: Path, n: int, seed: int = 0) -> tuple[list[str], str]:
    if REAL_SAMPLE.exists():
        comments = pd.read_csv(REAL_SAMPLE, usecols=["Comment"])["Comment"].dropna()
        source = str(REAL_SAMPLE.name)
    else:
        comments = pd.read_parquet(RunPaths(run_dir).reviews, columns=["comment"])["comment"]
        source = f"{run_dir.name}/prepared/reviews.parquet"
    pick = comments.sample(n=min(n, len(comments)), random_state=seed, replace=len(comments) < n)
    return pick.astype(str).tolist(), source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run directory (default: latest)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--reviews", type=int, default=500, help="single-review latency sample")
    parser.add_argument("--batch-reviews", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="1: a short review gains nothing from intra-op threads, which only spin on a busy CPU",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run_dir = args.run or find_trained_run(
        Path(os.environ.get("DOUBAN_RUNS_DIR") or PROJECT_ROOT / "runs")
    )
    scorer = Scorer.load(run_dir, args.model, device="cpu")
    texts, source = sample_reviews(run_dir, args.reviews)
    for text in texts[:20]:  # warm-up: first calls allocate and build jieba
        scorer.score_records([text])
    latencies = []
    for text in texts:
        start = time.perf_counter()
        scorer.score_records([text])
        latencies.append((time.perf_counter() - start) * 1000)
    lat = np.array(latencies)
    batch_texts, _ = sample_reviews(run_dir, args.batch_reviews, seed=1)
    start = time.perf_counter()
    scorer.score_records(batch_texts, batch_size=args.batch_size)
    elapsed = time.perf_counter() - start
    result = {
        "run": str(run_dir),
        "model": scorer.model_name,
        "reviews_from": source,
        "device": "cpu",
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "single": {
            "n": len(lat),
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(lat.mean()),
            "mean_chars": float(np.mean([len(t) for t in texts])),
        },
        "batch": {
            "n": len(batch_texts),
            "batch_size": args.batch_size,
            "seconds": elapsed,
            "reviews_per_second": len(batch_texts) / elapsed,
        },
        "goal": {"p50_ms": 30, "p99_ms": 100},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_average": os.getloadavg()[0],
    }
    write_json(args.output, result)
    table = Table(title=f"scoring on CPU ({args.threads} threads), model {scorer.model_name}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"):
        table.add_row(f"single review {key.removesuffix('_ms')}", f"{result['single'][key]:.1f} ms")
    table.add_row("batch throughput", f"{result['batch']['reviews_per_second']:.0f} reviews/s")
    table.add_row("load average during run", f"{result['load_average']:.1f}")
    Console().print(table)
    Console().print(f"written {args.output}")


if __name__ == "__main__":
    main()
