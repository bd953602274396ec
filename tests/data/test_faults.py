"""Fault injection: ``kill -9`` of the real ``douban prepare`` and ``douban features`` at random
points (a few seeds, the ~300-review demo corpus). After the kill a run holds the old complete
state or the new complete one (features: only whole shards, no manifest until the last), and a
resume ends identical to an uninterrupted run. benchmarks/faults.py runs more trials, over train
and report too."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks.faults import kill_after, run_to_end
from pipeline.data.demo import generate_demo_corpus

CONFIG = """
[prepare]
workers = 1
[features]
shard_size = 64
max_length = 16
token_layers = [-1]
"""
pytestmark = pytest.mark.slow


def douban_command(*args: str | Path, runs: Path, config: Path) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.cli", *map(str, args),
        "--runs-dir", str(runs), "--config", str(config),
    ]  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def prepared_state(run: Path) -> dict[str, str] | None:
    """What a reader of ``prepared/`` sees (None: nothing); the summary without its timing."""
    prepared = run / "prepared"
    if not prepared.exists():
        return None
    summary = json.loads((prepared / "summary.json").read_text(encoding="utf-8"))
    summary.pop("seconds")
    state = {name: digest(prepared / name) for name in ("reviews.parquet", "rejects.parquet")}
    state["summary"] = hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()
    state["fingerprint"] = json.loads((prepared / "manifest.json").read_text())["fingerprint"]
    return state


def feature_state(run: Path) -> dict[str, str]:
    """Every file of the feature store but the manifest's timestamp and the encoder's timing
    (``sample.json``: its reviews follow from the shards' own review_ids)."""
    root = run / "features"
    state = {
        str(p.relative_to(root)): digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", "sample.json")
    }
    if (root / "manifest.json").exists():
        state["fingerprint"] = json.loads((root / "manifest.json").read_text())["fingerprint"]
    return state


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Uninterrupted runs: ``old`` (another corpus) and ``ref`` (the corpus the trials use)."""
    root = tmp_path_factory.mktemp("faults")
    config = root / "settings.toml"
    config.write_text(CONFIG, encoding="utf-8")
    new = generate_demo_corpus(root / "demo_reviews.csv", n_reviews=300, seed=0)
    old = generate_demo_corpus(root / "old" / "demo_reviews.csv", n_reviews=200, seed=1)
    runs = root / "runs"
    run_to_end(douban_command("prepare", "-i", old, "--run", "old", runs=runs, config=config))
    prepare_s = run_to_end(
        douban_command("prepare", "-i", new, "--run", "ref", runs=runs, config=config)
    )
    features_s = run_to_end(douban_command("features", "--run", "ref", runs=runs, config=config))
    return {
        "root": root, "config": config, "new": new, "runs": runs,
        "old": prepared_state(runs / "old"), "ref": prepared_state(runs / "ref"),
        "features": feature_state(runs / "ref"), "prepare_s": prepare_s, "features_s": features_s,
    }  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_prepare_leaves_old_or_new_and_resumes_identically(
    reference: dict, seed: int
) -> None:
    runs, config = reference["runs"], reference["config"]
    run = runs / f"prepare-{seed}"
    shutil.copytree(runs / "old", run)  # the run starts in its old complete state
    # --force: the run was prepared from another corpus, which this prepare replaces
    command = douban_command("prepare", "-i", reference["new"], "--run", run.name, "--force",
                             runs=runs, config=config)  # fmt: skip
    at = random.Random(seed).uniform(0.3, 1.0) * reference["prepare_s"]
    kill_after(command, at)
    assert prepared_state(run) in (reference["old"], reference["ref"]), f"mixed state at {at:.1f}s"

    run_to_end(command)
    assert prepared_state(run) == reference["ref"]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".prepared")]


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_features_keep_whole_shards_and_resume_identically(
    reference: dict, seed: int
) -> None:
    runs, config = reference["runs"], reference["config"]
    run = runs / f"features-{seed}"
    run.mkdir()
    shutil.copytree(runs / "ref" / "prepared", run / "prepared")
    shutil.copy(runs / "ref" / "settings.json", run / "settings.json")
    command = douban_command("features", "--run", run.name, runs=runs, config=config)
    at = random.Random(seed).uniform(0.3, 0.9) * reference["features_s"]
    kill_after(command, at)
    if (run / "features").exists():
        partial = feature_state(run)
        whole = {k: v for k, v in partial.items() if not k.startswith(".")}
        complete = "fingerprint" in partial
        assert whole.items() <= reference["features"].items(), f"a torn shard at {at:.1f}s"
        assert not complete or partial == reference["features"]

    run_to_end(command)
    assert feature_state(run) == reference["features"]
    assert not [p.name for p in (run / "features").iterdir() if p.name.startswith(".")]
