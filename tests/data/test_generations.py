"""A run's model set changes all at once: generations, the pointer, leftovers, kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.artifacts import POINTER, current_generation, new_generation, read_json, write_text
from pipeline.config import ModelSet, RunPaths
from pipeline.modeling.bundle import list_models
from pipeline.run import Run
from pipeline.training.data import TrainingData
from pipeline.training.evaluate import pair_fingerprint
from pipeline.workflow import train_run

ENTRIES = ModelSet.ENTRIES


def _set(root: Path, marker: str) -> None:
    write_text(root / "models" / "m" / "config.json", marker)
    write_text(root / "metrics.json", marker)


def test_a_generation_becomes_current_only_when_complete(tmp_path):
    parent = tmp_path / "trained"
    with new_generation(parent, None, ENTRIES) as first:
        _set(first, "one")
        assert current_generation(parent) is None  # not before the block succeeds
    assert current_generation(parent) == first
    with pytest.raises(RuntimeError), new_generation(parent, first, ENTRIES) as second:
        assert (second / "metrics.json").read_text() == "one"  # starts as a copy
        _set(second, "two")
        raise RuntimeError("killed")
    assert current_generation(parent) == first and not second.exists()
    assert (first / "metrics.json").read_text() == "one"  # the copy shared nothing it changed


def test_leftovers_are_removed_when_the_next_generation_starts(tmp_path):
    parent = tmp_path / "trained"
    for marker in ("one", "two", "three"):
        with new_generation(parent, current_generation(parent), ENTRIES) as gen:
            _set(gen, marker)
    write_text(parent / "gen-4" / "half.bin", "")  # a killed writer's unfinished generation
    write_text(parent / f".{POINTER}.x.tmp", "gen-4")  # and its half-written pointer
    with new_generation(parent, current_generation(parent), ENTRIES) as gen:
        assert gen.name == "gen-4" and (gen / "metrics.json").read_text() == "three"
        assert not (gen / "half.bin").exists()
    # gen-1 is gone; gen-2 stays until the next start: a reader may have resolved it just before
    assert sorted(p.name for p in parent.iterdir()) == [POINTER, "gen-2", "gen-3", "gen-4"]


def test_run_paths_follow_the_pointer(tmp_path):
    paths = RunPaths(tmp_path / "run")
    assert paths.metrics == paths.root / "metrics.json"  # a run from before generations
    with paths.new_model_set() as new:
        write_text(new.metrics, "{}")
        assert paths.metrics != new.metrics
    assert paths.metrics == new.metrics and paths.model("x") == new.root / "models" / "x"


def test_readers_pin_the_generation_they_opened(tmp_path):
    """A Run or Scorer reads models, then metrics, then predictions: all from the set that was
    current when it opened, even when a retrain switches the pointer in between."""
    paths = RunPaths(tmp_path / "run")
    with paths.new_model_set() as first:
        write_text(first.metrics, "one")
    run, pinned = Run(paths), paths.pinned()
    with paths.new_model_set() as second:
        write_text(second.metrics, "two")
    assert run.paths.metrics.read_text() == pinned.metrics.read_text() == "one"
    assert paths.metrics.read_text() == "two" and pinned.pinned() is pinned


def assert_complete_set(paths: RunPaths) -> None:
    """The current set's metrics were computed from exactly its models, and its predictions
    hold every one of them."""
    models = paths.model_set
    names = list_models(models.models)
    doc = read_json(models.metrics)
    section = doc["evaluations"]["random"]
    data = TrainingData.load(paths)
    assert set(section["models"]) == set(names)
    for name in names:
        assert section["fingerprints"][name] == pair_fingerprint(data, models, name), name
    predicted = set(pq.read_table(models.predictions, columns=["model"])["model"].to_pylist())
    assert predicted >= set(names)
    assert doc["default_model"]["name"] in names


@pytest.mark.slow
def test_kill_9_during_a_retrain_leaves_the_old_or_the_new_complete_set(demo_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(demo_run.paths.root, runs / "demo", copy_function=os.link)  # read-only
    settings = demo_run.model_copy(update={"runs_dir": runs})
    config = tmp_path / "douban.toml"
    config.write_text(
        "[head]\nepochs = 6\npatience = 3\nhops = 2\nbatch_size = 32\n", encoding="utf-8"
    )
    command = [
        sys.executable, "-m", "pipeline.cli", "train", "--config", str(config),
        "--run", "demo", "--runs-dir", str(runs), "--force",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    log = tmp_path / "train.log"
    for seed in range(3):
        before = settings.paths.model_set.root
        started = settings.paths.trained / f"gen-{int(before.name.removeprefix('gen-')) + 1}"
        with log.open("wb") as err:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 300
            while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(np.random.default_rng(seed).uniform(0.2, 6.0))  # somewhere in training
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), log.read_text()[-2000:]
        assert settings.paths.model_set.root in (before, started)  # old or new, never between
        assert_complete_set(settings.paths)
    train_run(settings, progress=False)  # cleans what the kills left
    kept = {p.name for p in settings.paths.trained.iterdir()} - {POINTER}
    current = settings.paths.model_set.root.name
    assert current in kept and len(kept) <= 2 and not any(n.startswith(".") for n in kept)
    assert_complete_set(settings.paths)
