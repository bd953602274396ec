"""The scoring service under load: ``douban serve`` against 1, 4, 16 and 64 concurrent clients,
then a soak.

    python benchmarks/serve.py [--run RUN] [--runs-dir DIR] [--sweep 1,4,16,64] [--seconds 30]
                               [--soak-clients 16] [--soak 600] [--offline-reviews 1000]

1. offline: the batch rate of ``Scorer(texts)`` in this process, on the same reviews (then freed);
2. service: one ``douban serve`` process; for each client count of ``--sweep``, that many
   threads each send one review per request on a keep-alive connection for ``--seconds``;
3. soak: ``--soak-clients`` clients for ``--soak`` seconds after the sweep (the warm-up), the
   server's RSS sampled every 10 s (the series is in the JSON; flat means within 5%);
4. reported per phase: throughput against the offline rate, latency p50/p99, errors by status;
   and the server's exit on SIGTERM.

Goals (issue 23): at 16 clients >= 80% of the offline rate and p99 < 300 ms, zero errors, RSS
flat (+-5%) over the soak. Writes benchmarks/results/serve.json and prints a table.
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


def load_phase(
    port: int, texts: list[str], clients: int, seconds: float, process: Any, every: float = 1.0
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """``clients`` clients for ``seconds``: throughput, latency, statuses, and the server's RSS
    (MiB) every ``every`` seconds as (seconds since the start, MiB)."""
    stop_at = time.monotonic() + seconds
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    threads = [
        threading.Thread(
            target=client_loop, args=(port, texts, i * 37, stop_at, results[i]), daemon=True
        )
        for i in range(clients)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    rss: list[tuple[float, float]] = []
    while any(t.is_alive() for t in threads):
        rss.append((round(time.monotonic() - started, 1), process.memory_info().rss / 2**20))
        time.sleep(every)
    elapsed = time.monotonic() - started
    latencies = np.concatenate([r.get("latencies", []) for r in results])
    statuses: Counter[Any] = sum((r.get("statuses", Counter()) for r in results), Counter())
    ok = statuses.get(200, 0)
    phase = {
        "clients": clients,
        "seconds": elapsed,
        "reviews_per_second": ok / elapsed,
        "requests": int(sum(statuses.values())),
        "errors": sum(n for s, n in statuses.items() if s != 200),
        "statuses": {str(k): v for k, v in statuses.items()},
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)) if len(latencies) else None,
            "p99": float(np.percentile(latencies, 99)) if len(latencies) else None,
            "max": float(latencies.max()) if len(latencies) else None,
        },
    }
    return phase, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="run name or directory (default: newest)")
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument("--sweep", default="1,4,16,64", help="client counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="per sweep phase")
    parser.add_argument("--soak-clients", type=int, default=16)
    parser.add_argument("--soak", type=float, default=600.0, help="soak seconds (0: none)")
    parser.add_argument("--offline-reviews", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    paths = resolve_run(Path(args.run) if args.run and "/" in args.run else args.run,
                        args.runs_dir)  # fmt: skip
    texts, source = sample_reviews(paths, args.offline_reviews, seed=2)
    load_before = os.getloadavg()[0]

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
    server = subprocess.Popen(command, **quiet)
    phases, soak = [], None
    try:
        ready_s = wait_ready(port, server)
        process = psutil.Process(server.pid)
        for clients in (int(c) for c in args.sweep.split(",")):
            phase, _ = load_phase(port, texts, clients, args.seconds, process)
            phases.append(phase | {"vs_offline": phase["reviews_per_second"] / offline_rate})
            console.print(f"{clients} clients: {phase['reviews_per_second']:.1f} reviews/s, "
                          f"p99 {phase['latency_ms']['p99']:.0f} ms")  # fmt: skip
        if args.soak > 0:
            phase, rss = load_phase(port, texts, args.soak_clients, args.soak, process, every=10)
            mib = [m for _, m in rss]
            soak = phase | {
                "vs_offline": phase["reviews_per_second"] / offline_rate,
                "rss_mib_every_10_s": rss,
                "rss_mib": {"start": mib[0], "end": mib[-1], "max": max(mib), "min": min(mib)},
                "rss_change": (mib[-1] - mib[0]) / mib[0],
                "flat": (max(mib) - mib[0]) / mib[0] <= 0.05,
            }
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/readyz")
        batches = json.loads(conn.getresponse().read())["batches"]
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    result = {
        "run": str(paths.root),
        "model": model,
        "reviews_from": source,
        "ready_s": ready_s,
        "offline_reviews_per_second": offline_rate,
        "sweep": phases,
        "soak": soak,
        "batches": batches,
        "sigterm_exit_code": exit_code,
        "goal": {"vs_offline_at_16": 0.8, "p99_ms_at_16": 300, "errors": 0, "rss_flat": 0.05},
        "cpu_count": os.cpu_count(),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
    }
    write_json(args.output, result)

    table = Table(title=f"douban serve, model {model}; offline {offline_rate:.1f} reviews/s")
    for column in ("clients", "seconds", "reviews/s", "vs offline", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right")
    for name, phase in [*((str(p["clients"]), p) for p in phases), ("soak", soak)]:
        if phase is None:
            continue
        table.add_row(
            name if name != "soak" else f"soak ({phase['clients']})",
            f"{phase['seconds']:.0f}",
            f"{phase['reviews_per_second']:.1f}",
            f"{phase['vs_offline']:.0%}",
            f"{phase['latency_ms']['p50']:.0f}",
            f"{phase['latency_ms']['p99']:.0f}",
            str(phase["errors"]),
        )
    Console().print(table)
    if soak:
        r = soak["rss_mib"]
        console.print(f"soak RSS start {r['start']:.0f}, end {r['end']:.0f}, max {r['max']:.0f} "
                      f"MiB ({soak['rss_change']:+.1%}; flat: {soak['flat']})")  # fmt: skip
    console.print(f"ready after {ready_s:.1f} s; exit code on SIGTERM {exit_code}; load average "
                  f"before / after {load_before:.1f} / {os.getloadavg()[0]:.1f}")  # fmt: skip
    console.print(f"written {args.output}")


if __name__ == "__main__":
    main()
