"""From the demo to one's own data without a trap (issue 22, item 1): a forgotten --run never
replaces the demo. prepare and run name the run after their input; a run prepared from other
inputs is replaced only with --force; commands that write into a run must name it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.demo import generate_demo_corpus


def douban(*args: str):
    return CliRunner().invoke(app, list(args))


def test_prepare_names_the_run_after_its_input_and_keeps_other_runs(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    demo = generate_demo_corpus(tmp_path / "demo_reviews.csv", n_reviews=200, seed=3)
    mine = generate_demo_corpus(tmp_path / "my reviews.csv", n_reviews=150, seed=4)
    assert douban("prepare", "-i", str(demo), "--run", "demo", "--runs-dir", runs).exit_code == 0
    result = douban("prepare", "-i", str(mine), "--runs-dir", runs)  # no --run
    assert result.exit_code == 0, result.output
    assert "run my_reviews (named after my reviews.csv" in result.output
    assert (tmp_path / "runs" / "my_reviews" / "prepared" / "reviews.parquet").exists()

    replaced = douban("prepare", "-i", str(mine), "--run", "demo", "--runs-dir", runs)
    assert replaced.exit_code == 2 and "would replace them" in replaced.output
    assert "--force" in replaced.output and "Traceback" not in replaced.output
    forced = douban("prepare", "-i", str(mine), "--run", "demo", "--runs-dir", runs, "--force")
    assert forced.exit_code == 0, forced.output


def test_writing_commands_name_their_run(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    for command in (["features"], ["train"], ["evaluate"], ["finetune"], ["report", "--all"]):
        result = douban(*command, "--runs-dir", runs)
        assert result.exit_code == 2, (command, result.output)
        assert "name the run to write: --run NAME" in result.output
