"""Fault injection through the real CLI: ``kill -9`` at random points of prepare, features,
train and report, then a resume. Each trial starts from a complete "old" state of the stage
(prepare: another corpus; features: none yet; train: models trained with other settings;
report: the pages of those older models), kills the stage at a random moment of its reference
duration (drawn again, within the time it took, when the stage ended first), and classifies what
a reader would then see:

* ``old`` / ``new``: the old or the new complete state (what atomic stages guarantee);
* ``partial``: features only: whole shards of the new store and no manifest (resumable by design);
* ``MIXED``: anything else (old and new files together, torn files).

Train's state is its current generation (``trained/CURRENT``); report's is its pages
(``reports/<run>/``; the analytics cache under the run is keyed by fingerprints, not compared).

The resume (the stage run again to the end) must give the uninterrupted run's state
(``identical``). Timings in JSON (``seconds``, ``created``) and dates in pages are ignored.

    python benchmarks/faults.py [--trials 6,5,5,5] [--reviews 300] [--seed 0]
                                [--stages train,report]   # rerun some, keep the others' trials

Writes benchmarks/results/faults.json and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
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

from pipeline.artifacts import POINTER, current_generation  # noqa: E402
from pipeline.data.demo import generate_demo_corpus  # noqa: E402
from pipeline.encoding.e5_convert import cache_root  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "faults.json"
STAGES = ("prepare", "features", "train", "report")
CONFIG = """
reports_dir = "{reports}"
[prepare]
workers = 1
[features]
shard_size = 64
max_length = 16
token_layers = [-1]
[head]
epochs = {epochs}
batch_size = 32
hops = 2
"""
NEW_EPOCHS, OLD_EPOCHS = 3, 2  # the "new" settings retrain over models of the "old" ones
VOLATILE_KEYS = {"seconds", "created", "elapsed", "duration", "timestamp", "generated"}
_DATES = re.compile(rb"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?(\.\d+)?")
_DATE_VALUE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?(\.\d+)?")
OTHER_GENERATIONS = ".not-current"  # train: generations that are not current (invisible)
console = Console(stderr=True)


class Layout:
    """A runs folder holding run ``t`` and its reports folder, with the config that names it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = root / "runs"
        self.run = self.runs / "t"
        self.reports = root / "reports" / "t"

    def config(self, epochs: int) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"settings-{epochs}.toml"
        text = CONFIG.format(reports=(self.root / "reports").as_posix(), epochs=epochs)
        path.write_text(text, encoding="utf-8")
        return path

    def command(self, stage: str, epochs: int, extra: list[str]) -> list[str]:
        return [
            sys.executable, "-m", "pipeline.cli", stage, "--run", "t", "--runs-dir",
            str(self.runs), "--config", str(self.config(epochs)), *extra,
        ]  # fmt: skip

    def copy_to(self, root: Path) -> Layout:
        shutil.copytree(self.root, root)
        return Layout(root)


def environment() -> dict[str, str]:
    return {**os.environ, "DOUBAN_CACHE_DIR": os.environ.get("DOUBAN_CACHE_DIR", str(cache_root()))}


def run_to_end(command: list[str], timeout: float = 1800) -> float:
    """Run ``command`` to its end; its seconds. Exits with its stderr when it fails."""
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env=environment(), timeout=timeout
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def kill_after(command: list[str], seconds: float) -> float | None:
    """SIGKILL the command's process group after ``seconds``: None; if it finished first, the
    seconds it took."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(),
        start_new_session=True,
    )
    try:
        process.wait(timeout=seconds)
        return time.perf_counter() - start
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


def _stable(value: Any) -> Any:
    """JSON without timings and timestamps (``trained``, ``evaluated`` ... dates)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, str) and _DATE_VALUE.fullmatch(value):
        return "<time>"
    return value


def file_digest(path: Path) -> str:
    """A file's hash, ignoring timings in JSON and dates in pages; ``TORN`` when unreadable."""
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            data = json.dumps(_stable(json.loads(data)), sort_keys=True).encode()
        except ValueError:
            return "TORN"
    elif path.suffix == ".html":
        data = _DATES.sub(b"", data)
    return hashlib.sha256(data).hexdigest()[:16]


def state(layout: Layout, stage: str) -> dict[str, str]:
    """File name -> digest of what a reader of the stage's output sees. Train writes
    generations (``trained/gen-N`` + a ``CURRENT`` pointer): the current one is named
    ``current/``, a later one (a killed retrain) ``.unfinished/``, an earlier one (kept until
    the next retrain) ``.not-current/``."""
    base = {"prepare": layout.run / "prepared", "features": layout.run / "features",
            "train": layout.run / "trained", "report": layout.reports}[stage]  # fmt: skip
    if not base.exists():
        return {}
    current = None
    if stage == "train":
        try:
            current = current_generation(base)
        except OSError:
            return {"CURRENT": "TORN"}
    seen = {}
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        name = path.relative_to(base)
        if stage == "train":
            if name.parts[0] == POINTER:
                continue
            inside = current is not None and name.parts[0] == current.name
            later = current is None or _generation(name.parts[0]) > _generation(current.name)
            kind = "current" if inside else ".unfinished" if later else OTHER_GENERATIONS
            name = Path(kind, *name.parts[inside:])
        seen[str(name)] = file_digest(path)
    return seen


def _generation(name: str) -> int:
    digits = name.rpartition("-")[2]
    return int(digits) if digits.isdigit() else 0


def hidden(state_: dict[str, str]) -> list[str]:
    """Names no reader sees: temporaries (``.*``) and generations that are not current."""
    return [name for name in state_ if any(part.startswith(".") for part in Path(name).parts)]


def leftovers(state_: dict[str, str]) -> list[str]:
    """Hidden names that are not a kept earlier generation: what a killed writer left."""
    return [name for name in hidden(state_) if not name.startswith(OTHER_GENERATIONS)]


def visible(state_: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in state_.items() if k not in hidden(state_)}


def classify(stage: str, seen: dict[str, str], old: dict[str, str], new: dict[str, str]) -> str:
    seen, old, new = visible(seen), visible(old), visible(new)
    if seen == old:
        return "old"
    if seen == new:
        return "new"
    complete = any(k.endswith("manifest.json") for k in seen)
    if stage == "features" and not complete and seen.items() <= new.items():
        return "partial"
    return "MIXED"


def build_templates(root: Path, reviews: int) -> tuple[dict[str, Layout], dict[str, Layout], dict]:
    """Before and after layouts per stage, and the uninterrupted durations."""
    new_csv = generate_demo_corpus(root / "corpus" / "demo_reviews.csv", reviews, seed=0)
    old_csv = generate_demo_corpus(root / "corpus-old" / "demo_reviews.csv", reviews * 2 // 3, 1)
    seconds: dict[str, float] = {}
    old_prep = Layout(root / "old-prepare")
    run_to_end(old_prep.command("prepare", NEW_EPOCHS, ["-i", str(old_csv)]))
    ref = Layout(root / "ref")
    prepare_cmd = ["-i", str(new_csv), "--force"]  # the trials replace another corpus's run
    seconds["prepare"] = run_to_end(ref.command("prepare", NEW_EPOCHS, prepare_cmd))
    before_features = ref.copy_to(root / "before-features")
    seconds["features"] = run_to_end(ref.command("features", NEW_EPOCHS, []))
    old_train = ref.copy_to(root / "old-train")
    run_to_end(old_train.command("train", OLD_EPOCHS, []))
    film = next(iter(json.loads((ref.run / "prepared" / "summary.json").read_text())["films"]))
    report_cmd = ["--film", film]
    run_to_end(old_train.command("report", OLD_EPOCHS, report_cmd))
    seconds["train"] = run_to_end(ref.command("train", NEW_EPOCHS, []))
    seconds["report"] = run_to_end(ref.command("report", NEW_EPOCHS, report_cmd))
    # report trials: the new models with the old models' pages
    before_report = ref.copy_to(root / "before-report")
    shutil.rmtree(before_report.reports)
    shutil.copytree(old_train.reports, before_report.reports)
    before = {"prepare": old_prep, "features": before_features, "train": old_train,
              "report": before_report}  # fmt: skip
    commands = {"prepare": prepare_cmd, "features": [], "train": [], "report": report_cmd}
    return before, {s: ref for s in STAGES}, {"seconds": seconds, "commands": commands}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", default="6,5,5,5", help="trials per stage: prepare,features,"
                        "train,report")  # fmt: skip
    parser.add_argument("--reviews", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(STAGES), help="stages to run trials for "
                        "(the others' trials are kept from the results file)")  # fmt: skip
    args = parser.parse_args()
    counts = dict(zip(STAGES, map(int, args.trials.split(",")), strict=True))
    counts = {s: n if s in args.stages.split(",") else 0 for s, n in counts.items()}
    rng = random.Random(args.seed)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="douban-faults-") as tmp:
        root = Path(tmp)
        console.print("building the reference runs ...")
        before, after, ref = build_templates(root, args.reviews)
        trials = []
        for stage in STAGES:
            old = state(before[stage], stage)
            new = state(after[stage], stage)
            duration = ref["seconds"][stage]
            for i in range(counts[stage]):
                # a kill after the stage ended tests nothing: the load on a shared machine
                # changes how long a stage takes, so a stage that ended first is drawn again
                # within the time it took (twice at most)
                for attempt in range(3):
                    trial = before[stage].copy_to(root / "trials" / f"{stage}-{i}-{attempt}")
                    command = trial.command(stage, NEW_EPOCHS, ref["commands"][stage])
                    at = round(rng.uniform(0.05, 0.95) * duration, 2)
                    took = kill_after(command, at)
                    killed = took is None
                    if killed or attempt == 2:
                        break
                    duration = took
                    shutil.rmtree(trial.root)
                seen = state(trial, stage)
                outcome = classify(stage, seen, old, new)
                run_to_end(command)
                resumed = state(trial, stage)
                record = {
                    "stage": stage, "kill_at_s": at, "killed_mid_run": killed,
                    "attempts": attempt + 1,
                    "after_kill": outcome, "leftovers_after_kill": len(leftovers(seen)),
                    "resume_identical": visible(resumed) == visible(new),
                    "leftovers_after_resume": leftovers(resumed),
                }  # fmt: skip
                if outcome == "MIXED" or not record["resume_identical"]:
                    shown, ref_new, ref_old = visible(resumed), visible(new), visible(old)
                    if outcome == "MIXED":
                        shown = visible(seen)
                    record["differs"] = [  # the files that are not the new ones, and what they are
                        f"{k}: " + ("missing" if k not in shown else "old" if shown[k] ==
                                    ref_old.get(k) else "neither old nor new")
                        for k in sorted(set(shown) | set(ref_new) | set(ref_old))
                        if shown.get(k) != ref_new.get(k)
                    ][:20]  # fmt: skip
                trials.append(record)
                console.print(record)
                shutil.rmtree(trial.root)
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    kept = [t for t in previous.get("trials", []) if counts[t["stage"]] == 0]
    seconds = {**previous.get("reference_seconds", {}), **ref["seconds"]}
    trials = kept + trials
    summary = summarise(trials)
    table = Table(title=f"kill -9 at random points ({len(trials)} trials)")
    for column in ("stage", "trials", "killed mid-run", "old", "new", "partial", "MIXED",
                   "resume identical", "leftovers after resume"):  # fmt: skip
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, row in summary.items():
        table.add_row(stage, *(str(row[k]) for k in (
            "trials", "killed_mid_run", "old", "new", "partial", "MIXED", "resume_identical",
            "leftovers_after_resume")))  # fmt: skip
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "summary": summary,
                "trials": trials,
                "reference_seconds": seconds,
                "stages_rerun": [s for s in STAGES if counts[s]],
                "reviews": args.reviews,
                "seed": args.seed,
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            },
            ensure_ascii=False,
            indent=2,
        ),  # fmt: skip
        encoding="utf-8",
    )
    console.print(f"wrote {RESULTS}")


def summarise(trials: list[dict]) -> dict[str, dict[str, int]]:
    summary = {}
    for stage in STAGES:
        rows = [t for t in trials if t["stage"] == stage]
        summary[stage] = {
            "trials": len(rows),
            "killed_mid_run": sum(t["killed_mid_run"] for t in rows),
            **{
                k: sum(t["after_kill"] == k for t in rows)
                for k in ("old", "new", "partial", "MIXED")
            },
            "resume_identical": sum(t["resume_identical"] for t in rows),
            "leftovers_after_resume": sum(len(t["leftovers_after_resume"]) for t in rows),
        }
    return summary


if __name__ == "__main__":
    main()
