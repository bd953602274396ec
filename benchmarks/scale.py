"""The Ray engine's cost on one machine, and batch scoring with bounded driver memory.

(1) Feature extraction, the same reviews (the first ``--reviews`` of dmsc_sample's test split,
prepared once) through the local engine and the Ray engine with 1 and 2 encoder actors on a local
Ray runtime of this machine's cores: reviews/s and Ray's throughput as a share of local (a 2-core
machine cannot show a speed-up; it shows what the engine costs). The Ray runtime is started once
beforehand, as a cluster would already be running; its start-up time is reported on its own.

(2) ``douban score --engine ray`` on generated Parquet files of ``--score-rows`` reviews (real
reviews replicated, written in row groups, never held whole): wall time, reviews/s and the
driver's peak RSS, each size in a fresh process, so the trend shows whether the driver's memory
grows with the input. The model is ``tfidf_lr`` (no encoder: on CPU an encoder model scores
~100 reviews/s, hours for 1M), trained on the benchmark run.

    python benchmarks/scale.py [--reviews 2000] [--score-rows 10000,100000,1000000]
                               [--skip-extract | --skip-score] [--work DIR]

Prints a table and writes benchmarks/results/scale.json (with ``uptime``'s load average: the
figures of a busy shared machine are slower, not wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from pipeline.artifacts import write_json
from pipeline.config import Settings, load_settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dmsc_sample.csv"
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
SCORE_MODEL = "tfidf_lr"

console = Console(stderr=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def settings_for(work: Path, run: str, shard_size: int = 4096) -> Settings:
    return load_settings(
        None,
        run_name=run,
        runs_dir=work / "runs",
        **{
            "prepare.workers": 1,
            "features.device": "cpu",
            "features.token_layers": [-1],
            "features.shard_size": shard_size,
        },
    )


def prepare_subset(work: Path, n: int) -> Path:
    """Prepare dmsc_sample once (cached by fingerprint), then its first ``n`` test-split
    reviews as a run of their own; returns that run's prepared directory."""
    from pipeline.data.prepare import prepare_run

    if not DATA.exists():
        raise SystemExit(f"{DATA} not found: the benchmark needs the shared real reviews")
    full = settings_for(work, "dmsc_sample")
    prepare_run(full, [DATA], progress=False)
    reviews = pd.read_parquet(full.paths.reviews)
    test = reviews[reviews["split"] == "test"].head(n)
    if len(test) < n:
        raise SystemExit(f"dmsc_sample's test split has {len(test)} reviews, fewer than {n}")
    subset_csv = work / f"dmsc_test_{n}.csv"
    source = pd.DataFrame(  # back to the DMSC format, so the subset is prepared like any input
        {
            "Movie_Name_EN": test["film_en"],
            "Movie_Name_CN": test["film_cn"],
            "Date": test["date"],
            "Star": test["star"],
            "Comment": test["comment"],
            "Like": test["like"],
        }
    )
    source.to_csv(subset_csv, index=False)
    subset = settings_for(work, f"subset_{n}")
    prepare_run(subset, [subset_csv], progress=False)
    return subset.paths.prepared


def fresh_run(work: Path, prepared: Path, run: str, shard_size: int) -> Settings:
    settings = settings_for(work, run, shard_size)
    shutil.rmtree(settings.paths.root, ignore_errors=True)
    shutil.copytree(prepared, settings.paths.prepared)
    return settings


def bench_extraction(work: Path, prepared: Path) -> dict[str, Any]:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local runtime on 127.0.0.1
    import ray

    from pipeline.features.extract import extract_features

    n = pq.ParquetFile(prepared / "reviews.parquet").metadata.num_rows  # after prepare's dedup
    shard_size = max(n // 8, 1)  # 8 shards: work for every actor, the same plan for each engine
    results: dict[str, Any] = {"reviews": n, "shard_size": shard_size, "engines": []}

    def measure(name: str, engine: str, actors: int | None) -> None:
        run = f"extract_{engine}" + (f"_{actors}" if actors else "")
        settings = fresh_run(work, prepared, run, shard_size)
        start = time.perf_counter()
        extract_features(settings, engine=engine, actors=actors)
        seconds = time.perf_counter() - start
        results["engines"].append(
            {
                "engine": name,
                "seconds": round(seconds, 2),
                "reviews_per_s": round(n / seconds, 1),
                "load_average": load_average(),
            }
        )

    measure("local", "local", None)  # before Ray starts: its daemons would slow the local run
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    results["ray_start_s"] = round(time.perf_counter() - start, 2)
    try:
        measure("ray, 1 actor", "ray", 1)
        measure("ray, 2 actors", "ray", 2)
    finally:
        ray.shutdown()
    local = results["engines"][0]["reviews_per_s"]
    for row in results["engines"]:
        row["share_of_local"] = round(row["reviews_per_s"] / local, 3)
    return results


def write_score_input(path: Path, rows: int, chunk: int = 50_000) -> None:
    """``rows`` real reviews (dmsc_sample's, repeated) in row groups of ``chunk``, streamed."""
    comments = pd.read_csv(DATA, usecols=["Comment"])["Comment"].dropna().astype(str).tolist()
    schema = pa.schema([("Comment", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            take = [comments[i % len(comments)] for i in range(start, min(start + chunk, rows))]
            writer.write_table(pa.table({"Comment": take}, schema=schema))


def score_child(run_dir: Path, source: Path, output: Path, actors: int) -> None:
    """Score in this (fresh) process and print its figures as JSON on stdout."""
    from pipeline.predict.ray_scoring import score_file_on_ray

    peak = {"rss": 0}
    stop = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], me.memory_info().rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    counts = score_file_on_ray(run_dir, source, output, model=SCORE_MODEL, actors=actors)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    print(
        json.dumps(
            {
                **counts,
                "seconds": round(seconds, 2),
                "reviews_per_s": round(counts["rows"] / seconds, 1),
                "driver_peak_rss_mb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
                "driver_sampled_peak_rss_mb": round(peak["rss"] / 2**20, 1),
                "load_average": load_average(),
            }
        )
    )


def bench_scoring(work: Path, prepared: Path, sizes: list[int], actors: int) -> list[dict]:
    from pipeline.features.extract import extract_features
    from pipeline.workflow import train_run

    settings = settings_for(work, "extract_local")  # the local engine's run, when measured
    if not settings.paths.reviews.exists():
        settings = fresh_run(work, prepared, "extract_local", 4096)
    extract_features(settings)  # a no-op when up to date: training reads the store
    train_run(settings, [SCORE_MODEL], progress=False)
    rows = []
    for size in sizes:
        source = work / f"score_{size}.parquet"
        if not source.exists():
            write_score_input(source, size)
        output = work / f"scored_{size}.parquet"
        child = subprocess.run(
            [sys.executable, __file__, "--score-child", str(settings.paths.root), str(source),
             str(output), str(actors)],
            check=True, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        assert pq.ParquetFile(output).metadata.num_rows == size == figures["rows"]
        rows.append({"input_rows": size, "input_mb": round(source.stat().st_size / 2**20, 1)})
        rows[-1].update(figures)
        output.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reviews", type=int, default=2000, help="reviews to extract")
    parser.add_argument("--score-rows", default="10000,100000,1000000", help="input sizes to score")
    parser.add_argument("--actors", type=int, default=2, help="scoring actors")
    parser.add_argument("--skip-extract", action="store_true", help="keep the figures measured")
    parser.add_argument("--skip-score", action="store_true", help="keep the figures measured")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "douban-scale")
    parser.add_argument("--score-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score_child:
        run_dir, source, output, actors = args.score_child
        score_child(Path(run_dir), Path(source), Path(output), int(actors))
        return

    from pipeline.encoding.e5_convert import cache_root

    os.environ.setdefault("DOUBAN_CACHE_DIR", str(cache_root()))  # Ray workers inherit it
    args.work.mkdir(parents=True, exist_ok=True)
    before = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    prepared = prepare_subset(args.work, args.reviews)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_at_start": load_average(),
    }
    if args.skip_extract:
        result["extraction"] = before.get("extraction")
    else:
        result["extraction"] = bench_extraction(args.work, prepared)
        write_json(RESULTS, before | result)  # kept should scoring fail
    if args.skip_score:
        result["scoring"] = before.get("scoring")
    else:
        sizes = [int(x) for x in args.score_rows.split(",") if x]
        result["scoring"] = {
            "model": SCORE_MODEL,
            "actors": args.actors,
            "sizes": bench_scoring(args.work, prepared, sizes, args.actors),
        }
    result["load_average_at_end"] = load_average()
    report(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS, result)
    console.print(f"wrote {RESULTS}")


def report(result: dict[str, Any]) -> None:
    out = Console()
    if result.get("extraction"):
        ex = result["extraction"]
        table = Table(
            title=f"feature extraction, {ex['reviews']:,} dmsc_sample test reviews "
            f"(Ray start-up {ex['ray_start_s']} s, not included)"
        )
        for column in ("engine", "seconds", "reviews/s", "share of local", "load avg"):
            table.add_column(column)
        for row in ex["engines"]:
            table.add_row(
                row["engine"], f"{row['seconds']:.1f}", f"{row['reviews_per_s']:.1f}",
                f"{row['share_of_local']:.0%}", str(row["load_average"][0]),
            )  # fmt: skip
        out.print(table)
    if not result.get("scoring"):
        return
    table = Table(title=f"scoring Parquet on Ray ({result['scoring']['model']})")
    for column in ("reviews", "seconds", "reviews/s", "driver peak RSS", "load avg"):
        table.add_column(column)
    for row in result["scoring"]["sizes"]:
        table.add_row(
            f"{row['input_rows']:,}", f"{row['seconds']:.1f}", f"{row['reviews_per_s']:.1f}",
            f"{row['driver_peak_rss_mb']:.0f} MB", str(row["load_average"][0]),
        )  # fmt: skip
    out.print(table)


if __name__ == "__main__":
    main()
