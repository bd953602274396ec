"""Concurrent writers and readers on one run, through the real CLI (issue 21): are model sets
ever mixed, and do readers keep answering while a run is retrained?

* ``two trainers``: two `douban train --force` (other settings each) started together. One
  must train, the other stop at once naming it (exit 1, "being written by"); the current
  model set must be whole: every model's figures computed from that very model (no stale pair).
* ``trainer + scorer``: `douban train --force` while this process scores with ``Scorer.load``
  over and over (a reader opens the current set each time): every answer must come.
* ``trainer + service``: the same with the HTTP service (in-process, ``explain=true``), which
  follows ``CURRENT`` across the retrain: every request must answer 200.

    python benchmarks/concurrency.py [--trials 5] [--reviews 300]

Writes benchmarks/results/concurrency.json and prints a table (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faults import Layout, environment, run_to_end  # noqa: E402

from pipeline.config import RunPaths  # noqa: E402
from pipeline.data.demo import generate_demo_corpus  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "concurrency.json"
TEXTS = ["这部电影太好看了，强烈推荐", "剧情拖沓，浪费时间"]
console = Console(stderr=True)


def mixed_models(layout: Layout) -> list[str]:
    """Models of the current set whose recorded figures were computed from another model."""
    from pipeline.training.data import TrainingData
    from pipeline.training.evaluate import stale_models

    paths = RunPaths(layout.run).pinned()
    names = sorted(p.name for p in paths.models.iterdir())
    return stale_models(TrainingData.load(paths), paths.model_set, names, "random")


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment()
    )


def two_trainers(layout: Layout, epochs: tuple[int, int]) -> dict[str, Any]:
    first, second = (start(layout.command("train", e, ["--force"])) for e in epochs)
    outs = [(p.wait(), p.communicate()[1]) for p in (first, second)]
    codes = sorted(code for code, _ in outs)
    busy = sum("being written by" in err for _, err in outs)
    refused = codes == [0, 1] and busy == 1
    return {
        "exit_codes": codes,
        "outcome": "one refused" if refused else "in turn" if codes == [0, 0] else "FAILED",
        "tracebacks": sum("Traceback" in err for _, err in outs),
        "mixed_models": mixed_models(layout),
    }


def while_training(layout: Layout, epochs: int, ask: Any) -> dict[str, Any]:
    trainer = start(layout.command("train", epochs, ["--force"]))
    answers, failures = 0, []
    while trainer.poll() is None:
        try:
            ask()
            answers += 1
        except Exception as err:  # noqa: BLE001 - every failure is the finding
            failures.append(f"{type(err).__name__}: {err}"[:200])
    ask()  # and once on the new set
    return {
        "trainer_exit": trainer.returncode,
        "answers": answers + 1,
        "failures": failures,
        "mixed_models": mixed_models(layout),
    }


def scorer_reader(layout: Layout) -> Any:
    from pipeline import Scorer

    def ask() -> None:
        records = Scorer.load("t", runs_dir=layout.runs).score_records(TEXTS)
        assert all(r["pred_star"] in range(1, 6) for r in records), records

    return ask


def service_reader(layout: Layout) -> tuple[Any, Any]:
    from fastapi.testclient import TestClient

    from pipeline.serve.app import create_app

    client = TestClient(create_app("t", layout.runs, threads=1, load_in_background=False))
    client.__enter__()

    def ask() -> None:
        response = client.post("/v1/score", json={"texts": TEXTS, "explain": True})
        assert response.status_code == 200, response.text[:200]

    return ask, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--reviews", type=int, default=300)
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {"two trainers": [], "trainer + scorer": [],
                                                "trainer + service": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="douban-concurrency-") as tmp:
        layout = Layout(Path(tmp) / "ref")
        csv = generate_demo_corpus(Path(tmp) / "demo.csv", n_reviews=args.reviews, seed=1)
        for stage, extra in (("prepare", ["--input", str(csv)]), ("features", []), ("train", [])):
            run_to_end(layout.command(stage, 2, extra))
        ask, client = service_reader(layout)
        readers = {"trainer + scorer": scorer_reader(layout), "trainer + service": ask}
        try:
            for trial in range(args.trials):
                epochs = 2 + trial % 2
                results["two trainers"].append(two_trainers(layout, (epochs, epochs + 1)))
                for kind, reader in readers.items():
                    results[kind].append(while_training(layout, epochs + 1, reader))
                console.print({k: v[-1] for k, v in results.items()})
        finally:
            client.__exit__(None, None, None)
    summary = {
        kind: {
            "trials": len(rows),
            "mixed_model_sets": sum(bool(r["mixed_models"]) for r in rows),
            "tracebacks": sum(r.get("tracebacks", 0) for r in rows),
            **(
                {
                    o: sum(r["outcome"] == o for r in rows)
                    for o in ("one refused", "in turn", "FAILED")
                }
                if kind == "two trainers"
                else {
                    "answers": sum(r["answers"] for r in rows),
                    "failed_answers": sum(len(r["failures"]) for r in rows),
                }
            ),
        }
        for kind, rows in results.items()
    }
    table = Table(title=f"concurrent writers and readers ({args.trials} trials each)")
    for column in ("trial", "trials", "mixed model sets", "outcome / answers", "failed"):
        table.add_column(column, justify="left" if column == "trial" else "right")
    for kind, row in summary.items():
        if kind == "two trainers":
            done = f"{row['one refused']} one refused, {row['in turn']} in turn"
            failed = row["FAILED"] + row["tracebacks"]
        else:
            done, failed = f"{row['answers']} answers", row["failed_answers"]
        table.add_row(kind, str(row["trials"]), str(row["mixed_model_sets"]), done, str(failed))
    Console().print(table)
    RESULTS.write_text(
        json.dumps(
            {"summary": summary, "trials": results, "reviews": args.reviews,
             "load_average_before": load_before, "load_average_after": os.getloadavg(),
             "measured": time.strftime("%Y-%m-%dT%H:%M:%S")},
            ensure_ascii=False, indent=2,
        ),
        encoding="utf-8",
    )  # fmt: skip
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
