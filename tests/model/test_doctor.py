"""`douban doctor` and the one-line errors of broken artifacts: each names its file and the
command that rebuilds it (issue 21)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import RunPaths


@pytest.fixture()
def run_copy(demo_run, tmp_path) -> RunPaths:
    target = tmp_path / "runs" / "demo"
    shutil.copytree(demo_run.paths.root, target)
    return RunPaths(target)


def doctor(paths: RunPaths) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(
        app, ["doctor", "--run", paths.name, "--runs-dir", str(paths.root.parent), "--json"]
    )
    assert "Traceback" not in result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, records


def test_a_whole_run_is_whole(run_copy: RunPaths) -> None:
    code, checks = doctor(run_copy)
    assert code == 0
    assert {c["stage"] for c in checks} >= {"prepare", "features", "train", "evaluate"}
    assert all(c["status"] == "ok" for c in checks), checks
    assert all("checksum ok" in c["detail"] for c in checks if c["artifact"].startswith("models/"))


def test_broken_artifacts_are_named_with_their_fix(run_copy: RunPaths) -> None:
    pinned = run_copy.pinned()
    shard = next(run_copy.features.glob("shard-*")) / "pooled_mean.npy"
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated
    pinned.metrics.write_text("{not json", encoding="utf-8")
    weights = pinned.model("tfidf_lr") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 1
    weights.write_bytes(bytes(data))
    code, checks = doctor(run_copy)
    broken = {c["artifact"]: c for c in checks if c["status"] == "broken"}
    assert code == 1 and set(broken) == {"features/", "metrics.json", "models/tfidf_lr"}
    assert "douban features --run demo --force" in broken["features/"]["fix"]
    assert "pooled_mean.npy" in broken["features/"]["detail"]
    assert "checksum" in broken["models/tfidf_lr"]["detail"]
    assert "douban evaluate --run demo --force" in broken["metrics.json"]["fix"]


def test_a_garbled_model_pointer_is_one_line_that_says_what_to_do(run_copy: RunPaths) -> None:
    (run_copy.trained / "CURRENT").write_text("../../etc", encoding="utf-8")
    base = ["--run", "demo", "--runs-dir", str(run_copy.root.parent)]
    for command in (["score", *base, "好看"], ["models", *base]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, result.output
        assert "names no model set" in result.output and "Traceback" not in result.output
    code, checks = doctor(run_copy)
    assert code == 1 and any(c["artifact"] == "trained/CURRENT" for c in checks)


def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "runs"
    not_a_dir.write_text("x", encoding="utf-8")
    result = CliRunner().invoke(app, ["models", "--runs-dir", str(not_a_dir)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "unexpected" not in result.output


def test_a_models_folder_that_is_a_file_is_one_line(run_copy: RunPaths) -> None:
    models = run_copy.pinned().models
    shutil.rmtree(models)
    models.write_text("not a folder", encoding="utf-8")
    base = ["--run", "demo", "--runs-dir", str(run_copy.root.parent)]
    result = CliRunner().invoke(app, ["score", *base, "好看"])
    assert result.exit_code == 1 and "is not a folder" in result.output
    assert "douban train --run demo --force" in result.output


def test_a_corrupt_predictions_file_is_one_line_with_adapt_prior(run_copy: RunPaths) -> None:
    run_copy.pinned().predictions.write_bytes(b"PAR1 not really parquet")
    base = ["--run", "demo", "--runs-dir", str(run_copy.root.parent)]
    texts = ["好看"] * 25
    result = CliRunner().invoke(app, ["score", *base, "--adapt-prior", *texts])
    assert result.exit_code == 1, result.output
    assert "predictions.parquet cannot be read" in result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output
