"""Benchmark the prepare stage.

1. Segmentation speed on real reviews (dmsc_sample.csv): plain single-process ``jieba.lcut`` in a
   loop vs the project's segmentation (titles in the dictionary, punctuation filtered) inline and
   over a process pool (pool start-up included).
2. Peak memory (RSS) of ingesting a generated DMSC-format CSV of ``--rows`` rows (2.1M = the full
   DMSC) built by repeating and perturbing the sample's rows, and of the whole prepare stage on it
   (ingest + splits + segmentation), each in a fresh subprocess.

    python benchmarks/prepare.py [--rows 2100000] [--workers 2] [--reviews N] [--ingest-only]

Writes benchmarks/results/prepare.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.data.text import clean_text, segment_texts  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "dmsc_sample.csv"
RESULTS = ROOT / "benchmarks" / "results" / "prepare.json"
FULL_HEADER = [
    "ID", "Movie_Name_EN", "Movie_Name_CN", "Crawl_Date", "Number", "Username", "Date", "Star",
    "Comment", "Like",
]  # fmt: skip

# run in a fresh interpreter so its peak RSS is the stage's alone
INGEST_CHILD = """
import json, resource, sys, time
from pathlib import Path
from pipeline.data.ingest import ingest
out = Path(sys.argv[2])
start = time.perf_counter()
stats = ingest([Path(sys.argv[1])], out / "r.parquet", out / "x.parquet", progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "rows_read": stats.rows_read,
                  "kept": stats.kept,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
PREPARE_CHILD = """
import json, resource, sys, time
from pathlib import Path
from pipeline.config import load_settings
from pipeline.data.prepare import prepare_run
settings = load_settings(None, run_name="bench", runs_dir=Path(sys.argv[2]),
                         **{"prepare.workers": int(sys.argv[3])})
start = time.perf_counter()
summary = prepare_run(settings, [Path(sys.argv[1])], force=True, progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "kept": summary["kept"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_worker_rss_mb":
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def load_sample(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def segmentation_speed(rows: list[dict[str, str]], workers: int) -> dict[str, float]:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    texts = [clean_text(r["Comment"]) for r in rows]
    films = sorted({r["Movie_Name_CN"] for r in rows} | {r["Movie_Name_EN"] for r in rows})
    jieba.initialize()
    start = time.perf_counter()
    for text in texts:
        jieba.lcut(text)
    plain = time.perf_counter() - start
    segment_texts(texts[:10], films)  # build the inline tokenizer outside the timing
    start = time.perf_counter()
    segment_texts(texts, films, workers=1)
    inline = time.perf_counter() - start
    start = time.perf_counter()
    segment_texts(texts[:1], films, workers=workers)
    startup = time.perf_counter() - start  # spawn, import, build the tokenizer in each worker
    start = time.perf_counter()
    segment_texts(texts, films, workers=workers)
    pooled = time.perf_counter() - start
    return {
        "reviews": len(texts),
        "plain_jieba_per_s": len(texts) / plain,
        "project_inline_per_s": len(texts) / inline,
        f"project_pool_{workers}_per_s": len(texts) / pooled,
        "pool_startup_s": startup,
        f"project_pool_{workers}_per_s_after_startup": len(texts) / max(pooled - startup, 1e-9),
        "pool_speedup_vs_plain": plain / pooled,
    }


def generate_csv(rows: list[dict[str, str]], n: int, path: Path) -> None:
    """``n`` DMSC rows cycling through the sample; each pass tags the comment so that repeats are
    new reviews, not duplicates."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FULL_HEADER)
        for i in range(n):
            r = rows[i % len(rows)]
            comment = r["Comment"] if i < len(rows) else f"{r['Comment']} (第{i // len(rows)}遍)"
            writer.writerow(
                [i, r["Movie_Name_EN"], r["Movie_Name_CN"], "2017-01-22", i % 30_000,
                 f"user{i % 997}", r["Date"], r["Star"], comment, r["Like"]]
            )  # fmt: skip


def run_child(code: str, *args: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_100_000, help="rows of the generated CSV")
    parser.add_argument("--workers", type=int, default=2, help="segmentation processes")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="real DMSC-format reviews")
    parser.add_argument("--reviews", type=int, default=None, help="segment only the first N")
    parser.add_argument("--ingest-only", action="store_true", help="skip the whole-stage run")
    args = parser.parse_args()
    if not args.sample.exists():
        sys.exit(f"{args.sample} not found; pass --sample path/to/dmsc_sample.csv")

    console = Console()
    rows = load_sample(args.sample)
    console.print(f"segmenting {len(rows[: args.reviews]):,} real reviews ...")
    result: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "segmentation": segmentation_speed(rows[: args.reviews], args.workers),
    }
    with tempfile.TemporaryDirectory(prefix="douban-bench-") as tmp:
        big = Path(tmp) / "dmsc_generated.csv"
        console.print(f"generating {args.rows:,} DMSC rows ...")
        generate_csv(rows, args.rows, big)
        memory: dict[str, object] = {"rows": args.rows, "csv_mb": big.stat().st_size / 2**20}
        console.print("ingesting in a subprocess ...")
        (Path(tmp) / "ingest").mkdir()
        memory["ingest"] = run_child(INGEST_CHILD, str(big), str(Path(tmp) / "ingest"))
        if not args.ingest_only:
            console.print("running the whole prepare stage in a subprocess ...")
            memory["prepare"] = run_child(
                PREPARE_CHILD, str(big), str(Path(tmp) / "runs"), str(args.workers)
            )
        result["memory"] = memory

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(results_table(result))
    console.print(f"wrote {RESULTS}")


def results_table(result: dict) -> Table:
    table = Table(title="prepare benchmark")
    table.add_column("measure")
    table.add_column("value", justify="right")
    seg = result["segmentation"]
    for key, value in seg.items():
        table.add_row(
            f"segmentation: {key}", f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        )
    memory = result["memory"]
    table.add_row("generated CSV", f"{memory['rows']:,} rows, {memory['csv_mb']:,.0f} MB")
    for stage in ("ingest", "prepare"):
        if stage in memory:
            m = memory[stage]
            table.add_row(f"{stage}: seconds", f"{m['seconds']:,.1f}")
            table.add_row(f"{stage}: rows/s", f"{memory['rows'] / m['seconds']:,.0f}")
            table.add_row(f"{stage}: peak RSS MB", f"{m['peak_rss_mb']:,.0f}")
            if "peak_worker_rss_mb" in m:
                table.add_row(f"{stage}: peak worker RSS MB", f"{m['peak_worker_rss_mb']:,.0f}")
    return table


if __name__ == "__main__":
    main()
