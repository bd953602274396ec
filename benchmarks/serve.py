"""The scoring service under load: ``douban serve`` against 16 concurrent clients on localhost.

    python benchmarks/serve.py [--run RUN] [--runs-dir DIR] [--clients 16] [--seconds 60]
                               [--offline-reviews 1000]

1. offline: the batch rate of ``Scorer(texts)`` in this process, on the same reviews (then freed);
2. service: ``douban serve`` in its own process; ``--clients`` threads each send one review per
   request on a keep-alive connection until ``--seconds`` have passed (self-stopping);
3. reported: throughput against the offline rate, latency p50/p99, errors by status, the
   server's RSS sampled every second (start, end, max: flat means no leak), and its exit on
   SIGTERM.

Goals (issue 13): >= 80% of the offline rate, p99 < 300 ms, zero errors, flat memory. Writes
benchmarks/results/serve.json and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from pipeline.artifacts import write_json
from pipeline.config import PROJECT_ROOT
from pipeline.locate import resolve_run
from pipeline.predict.scorer import Scorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score import sample_reviews  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "serve.json"
console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.poll() is not None:
            raise SystemExit(f"douban serve exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("douban serve did not become ready")


def client_loop(
    port: int, texts: list[str], offset: int, stop_at: float, out: dict[str, Any]
) -> None:
    """One client: one review per request, back to back, until ``stop_at``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, statuses, i = [], Counter(), offset
    while time.monotonic() < stop_at:
        body = json.dumps({"texts": [texts[i % len(texts)]]}, ensure_ascii=False).encode()
        start = time.perf_counter()
        try:
            conn.request("POST", "/v1/score", body, {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            statuses[response.status] += 1
        except (OSError, http.client.HTTPException) as error:
            statuses[type(error).__name__] += 1
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append((time.perf_counter() - start) * 1000)
        i += 1
    out["latencies"], out["statuses"] = latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="run name or directory (default: newest)")
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0, help="load (and soak) duration")
    parser.add_argument("--offline-reviews", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, offline side")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    paths = resolve_run(Path(args.run) if args.run and "/" in args.run else args.run,
                        args.runs_dir)  # fmt: skip
    texts, source = sample_reviews(paths, args.offline_reviews, seed=2)
    load_before = os.getloadavg()[0]

    import torch

    torch.set_num_threads(args.threads)
    scorer = Scorer(paths)
    scorer(texts[:20])  # warm-up
    start = time.perf_counter()
    scorer(texts, batch_size=64)
    offline_rate = len(texts) / (time.perf_counter() - start)
    model = scorer.model_name
    del scorer

    port = free_port()
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--run", paths.name]
    command += ["--runs-dir", str(paths.root.parent), "--port", str(port)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen(command, **quiet)  # torch threads: cores / workers
    try:
        ready_s = wait_ready(port, server)
        process = psutil.Process(server.pid)
        stop_at = time.monotonic() + args.seconds
        results: list[dict[str, Any]] = [{} for _ in range(args.clients)]
        threads = [
            threading.Thread(
                target=client_loop, args=(port, texts, i * 37, stop_at, results[i]), daemon=True
            )
            for i in range(args.clients)
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        rss = []
        while any(t.is_alive() for t in threads):
            rss.append(process.memory_info().rss / 2**20)
            time.sleep(1.0)
        elapsed = time.monotonic() - started
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/readyz")
        batches = json.loads(conn.getresponse().read())["batches"]
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    latencies = np.concatenate([r.get("latencies", []) for r in results])
    statuses: Counter[Any] = sum((r.get("statuses", Counter()) for r in results), Counter())
    ok = statuses.get(200, 0)
    errors = sum(n for s, n in statuses.items() if s != 200)
    throughput = ok / elapsed
    half = max(len(rss) // 2, 1)
    result = {
        "run": str(paths.root),
        "model": model,
        "reviews_from": source,
        "clients": args.clients,
        "seconds": elapsed,
        "threads": args.threads,
        "ready_s": ready_s,
        "offline_reviews_per_second": offline_rate,
        "service_reviews_per_second": throughput,
        "service_vs_offline": throughput / offline_rate,
        "requests": int(sum(statuses.values())),
        "batches": batches,
        "mean_batch_texts": ok / max(batches, 1),
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)),
            "max": float(latencies.max()),
        },
        "rss_mib": {
            "start": rss[0],
            "end": rss[-1],
            "max": max(rss),
            "first_half_mean": float(np.mean(rss[:half])),
            "second_half_mean": float(np.mean(rss[half:] or rss)),
        },
        "sigterm_exit_code": exit_code,
        "goal": {"service_vs_offline": 0.8, "p99_ms": 300, "errors": 0},
        "cpu_count": os.cpu_count(),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
    }
    write_json(args.output, result)

    table = Table(title=f"douban serve, {args.clients} clients x {elapsed:.0f} s, model {model}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("offline batch rate", f"{offline_rate:.1f} reviews/s")
    table.add_row("service throughput", f"{throughput:.1f} reviews/s")
    table.add_row("service / offline", f"{throughput / offline_rate:.0%}")
    table.add_row("latency p50 / p99", f"{result['latency_ms']['p50']:.0f} / "
                  f"{result['latency_ms']['p99']:.0f} ms")  # fmt: skip
    table.add_row("requests / errors", f"{result['requests']:,} / {errors}")
    table.add_row("micro-batches (mean texts)", f"{batches:,} ({ok / max(batches, 1):.1f})")
    table.add_row("server RSS start / end / max",
                  f"{rss[0]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} MiB")  # fmt: skip
    table.add_row("ready after start", f"{ready_s:.1f} s")
    table.add_row("exit code on SIGTERM", str(exit_code))
    table.add_row("load average before / after", f"{load_before:.1f} / {os.getloadavg()[0]:.1f}")
    Console().print(table)
    console.print(f"written {args.output}")


if __name__ == "__main__":
    main()
