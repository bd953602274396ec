"""The README's main job, timed stage by stage from an empty state (goal: under 15 minutes).

What `bash scripts/demo.sh` does after its `pip install`, in a fresh temporary directory: an empty
encoder cache (so the embedded e5 model is converted again), a freshly generated demo corpus, and
a new run directory; then prepare, features, heads + baselines + evaluation, every film's report,
and the app until it answers its health check. Setup (`scripts/setup.sh`: venv, pip, apt) is
measured separately with ``--setup``, which times it in a fresh `git clone` of this checkout.

    python benchmarks/main_job.py [--reviews 6000] [--setup] [--keep]

Writes benchmarks/results/main_job.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.artifacts import write_json  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.encoding.e5_convert import CACHE_ENV, embedded_e5_dir  # noqa: E402
from pipeline.workflow import run_demo  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "main_job.json"
GOAL_S = 15 * 60
console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def time_app_start(runs_dir: Path, run: str, timeout: float = 120.0) -> float:
    """Seconds from `douban app` to a 200 from Streamlit's health endpoint."""
    port = free_port()
    command = [sys.executable, "-m", "pipeline.cli", "app", "--run", run,
               "--runs-dir", str(runs_dir), "--port", str(port), "--headless"]  # fmt: skip
    start = time.perf_counter()
    app = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    return time.perf_counter() - start
            except OSError:
                if app.poll() is not None:
                    raise SystemExit(f"the app exited with code {app.returncode}") from None
                time.sleep(0.25)
        raise SystemExit(f"the app did not answer within {timeout:.0f} s")
    finally:
        app.terminate()
        app.wait(timeout=30)


def time_setup(workdir: Path) -> float:
    """Seconds of `bash scripts/setup.sh` in a fresh clone (pip from the local index, apt)."""
    clone = workdir / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    start = time.perf_counter()
    subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=6000, help="demo corpus size (default 6000)")
    parser.add_argument("--setup", action="store_true", help="also time scripts/setup.sh")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="douban-main-job-"))
    os.environ[CACHE_ENV] = str(workdir / "cache")  # a cold encoder cache, as on a new machine
    load_start = os.getloadavg()
    timings: dict[str, float] = {}
    try:
        if args.setup:
            timings["setup (fresh clone)"] = time_setup(workdir)
        start = time.perf_counter()
        embedded_e5_dir()
        timings["encoder conversion"] = time.perf_counter() - start
        settings = Settings(run_name="demo", runs_dir=workdir / "runs")
        result = run_demo(settings, args.reviews, corpus=workdir / "demo_reviews.csv")
        timings |= result.timings
        timings["app answers"] = time_app_start(settings.runs_dir, settings.run_name)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    job = sum(v for k, v in timings.items() if not k.startswith("setup"))

    table = Table(title=f"main job: {args.reviews:,}-review demo corpus, embedded e5-small")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in timings.items():
        table.add_row(stage, f"{seconds:.1f}")
    table.add_row("[bold]main job (without setup)[/bold]", f"[bold]{job:.1f}[/bold]")
    table.add_row("goal", f"< {GOAL_S}")
    console.print(table)
    record = {
        "reviews": args.reviews,
        "stages_s": {k: round(v, 2) for k, v in timings.items()},
        "main_job_s": round(job, 1),
        "goal_s": GOAL_S,
        "meets_goal": job < GOAL_S,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    write_json(RESULTS, record)
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
