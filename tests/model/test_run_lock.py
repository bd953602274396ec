"""One writer per run: a second writer stops at once naming the first, a killed writer leaves
the run unlocked, and a stage that fails before writing leaves no empty run behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.data.demo import generate_demo_corpus
from pipeline.data.prepare import prepare_run
from pipeline.errors import DoubanError, RunBusyError
from pipeline.locking import run_lock
from pipeline.workflow import train_run

HOLD = """
import sys, time
from pathlib import Path
from pipeline.locking import run_lock
with run_lock(Path(sys.argv[1]), "train"):
    (Path(sys.argv[1]) / "trained" / "gen-7").mkdir(parents=True)  # its unfinished model set
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture()
def prepared(tmp_path: Path):
    csv = generate_demo_corpus(tmp_path / "demo.csv", n_reviews=300, seed=5)
    settings = load_settings(
        None, run_name="r", runs_dir=tmp_path / "runs", **{"prepare.workers": 1}
    )
    prepare_run(settings, [csv], progress=False)
    return settings


def test_a_second_writer_stops_and_a_killed_one_frees_the_run(prepared) -> None:
    root = prepared.paths.root
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "train", "--run", "r",
             "--runs-dir", str(prepared.runs_dir)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        assert "being written by" in second.stderr and f"pid {holder.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        with pytest.raises(RunBusyError, match="being written"):
            train_run(prepared, progress=False)
        # neither trainer touched the holder's unfinished set (its clean-up waits for the lock)
        assert [p.name for p in prepared.paths.trained.iterdir()] == ["gen-7"]
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a writer killed mid-stage
        holder.wait()
    doc = train_run(prepared, progress=False)  # the kernel dropped the dead writer's lock
    assert doc["default_model"]["name"] in ("tfidf_lr", "tfidf_ridge")
    assert (prepared.paths.trained / "CURRENT").read_text().strip() == "gen-1"
    assert not (prepared.paths.trained / "gen-7").exists()  # the dead writer's leftovers go


def test_the_lock_is_reentrant_within_a_process(prepared) -> None:
    with run_lock(prepared.paths.root, "workflow"):
        train_run(prepared, progress=False)  # takes the same lock again, inside
    with run_lock(prepared.paths.root, "again"):  # and it was released
        pass


def test_a_failed_prepare_leaves_no_empty_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Star,Comment\n", encoding="utf-8")
    settings = load_settings(None, run_name="empty", runs_dir=tmp_path / "runs")
    with pytest.raises(DoubanError):
        prepare_run(settings, [bad], progress=False)
    assert not (tmp_path / "runs" / "empty").exists()
