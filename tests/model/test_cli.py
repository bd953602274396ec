"""The `douban` CLI's contracts: data on stdout and everything else on stderr, JSON Lines always,
errors as one line without a traceback, run names that stay names, help for every flag, and one
default model shared by `douban score` and `douban models`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import Settings, check_run_name, load_settings
from pipeline.errors import InputError, InputNotFoundError, RunNameError
from pipeline.predict.files import read_texts
from pipeline.terminal import json_line, printable

REPO = Path(__file__).resolve().parents[2]
BAD_RUN_NAMES = ["", " ", ".", "..", "../outside", "a/b", "a\\b", "/tmp/x", "C:x", "a\x00b",
                 "a\x1b[31mb", "x" * 300, " padded", "\u202eevil"]  # fmt: skip


def douban(*args: str, stdin: str | None = None) -> typer.testing.Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def assert_clean_error(result: typer.testing.Result, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, nothing on stdout, one ``error:`` line naming the problem."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------- run names


@pytest.mark.parametrize("name", BAD_RUN_NAMES)
def test_run_names_that_are_not_names_are_refused(name):
    with pytest.raises(RunNameError, match="run name"):
        load_settings(None, run_name=name)
    with pytest.raises(RunNameError):
        check_run_name(name)


@pytest.mark.parametrize("name", ["demo", "dmsc_2024", "豆瓣-影评", "run.v2"])
def test_plain_names_are_run_names(name, tmp_path):
    settings = load_settings(None, run_name=name, runs_dir=tmp_path)
    assert settings.paths.root.parent == tmp_path


def test_settings_refuse_a_bad_name_on_assignment_too():
    settings = Settings()
    with pytest.raises(ValueError, match="run name"):
        settings.run_name = "../escape"


@pytest.mark.parametrize("name", ["../outside", "/tmp/douban-abs", "a/b", ""])
def test_cli_never_writes_outside_the_runs_dir(tmp_path, name):
    runs = tmp_path / "runs"
    csv = tmp_path / "in.csv"
    csv.write_text("Movie_Name_CN,Star,Comment\n电影,5,好看\n", encoding="utf-8")
    result = douban("prepare", "--run", name, "--runs-dir", str(runs), "-i", str(csv))
    assert_clean_error(result, 2, "run name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    assert not Path("/tmp/douban-abs").exists()


def test_settings_errors_are_one_line(tmp_path):
    with pytest.raises(InputNotFoundError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[features\n", encoding="utf-8")
    with pytest.raises(InputError, match="cannot be read"):
        load_settings(bad)
    with pytest.raises(InputError, match=r"features\.max_length"):
        load_settings(None, **{"features.max_length": "long"})
    result = douban("features", "--config", str(tmp_path / "missing.toml"))
    assert_clean_error(result, 2, "missing.toml", "does not exist")
    result = douban("train", "--epochs", "0", "--runs-dir", str(tmp_path))
    assert_clean_error(result, 2, "head.epochs", "greater than or equal to 1")


# ------------------------------------------------------------------------- terminal safety

UNSAFE = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} | set("\u200e\u200f\u2028\u2029")
UNSAFE |= {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0xD800, 0xE000)]}
ANY_TEXT = st.text(st.characters(exclude_categories=()))  # lone surrogates included


@given(ANY_TEXT.filter(lambda t: "\\" not in t))
def test_printable_text_has_no_control_characters_and_keeps_the_rest(text):
    shown = printable(text)
    assert not UNSAFE & set(shown)
    kept = re.sub(r"\\x[0-9a-f]{2}|\\u[0-9a-f]{4}", "", shown)
    assert kept == "".join(c for c in text if c not in UNSAFE)


@given(st.dictionaries(st.text(max_size=5), ANY_TEXT | st.lists(ANY_TEXT, max_size=3)))
def test_json_lines_escape_every_control_character_and_round_trip(record):
    line = json_line(record)
    assert not UNSAFE & set(line)
    assert json.loads(line) == record
    line.encode("utf-8")  # writable to any UTF-8 stream


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".txt", ".tsv"]))
def test_any_bytes_are_read_or_refused_in_one_line(tmp_path, data, suffix):
    """Random bytes give one text per line / row, or an InputError; never anything else."""
    path = tmp_path / f"in{suffix}"
    path.write_bytes(data)
    try:
        texts = read_texts(path)
    except InputError as error:
        assert str(path) in str(error)
        return
    assert all(t is None or isinstance(t, str) for t in texts)


# ------------------------------------------------------------------------- help texts


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_option_and_argument_has_help_and_flags_show_no_type():
    root = typer.main.get_command(app)
    for path, command in _commands(root):
        names = {p.name for p in command.params}
        if "run" in names:
            assert "runs_dir" in names, f"douban {' '.join(path)} has --run but no --runs-dir"
        for param in command.params:
            assert getattr(param, "help", None), f"douban {' '.join(path)}: {param.name}"
        result = douban(*path, "--help")
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, path
    assert "Debug logs" in douban("--help").output  # -v says what it does


# ------------------------------------------------------------------------- the done-when checks


@pytest.fixture(scope="module")
def run_args(demo_run) -> list[str]:
    return ["--run", demo_run.run_name, "--runs-dir", str(demo_run.runs_dir)]


@pytest.mark.slow
def test_stdin_jsonl_is_three_lines_and_nothing_else(demo_run, tmp_path):
    """As a shell runs it: `douban score --run demo --json -i - < three_lines.txt`."""
    three = tmp_path / "three_lines.txt"
    three.write_text("这部电影太好看了\n剧情拖沓，浪费时间\n一般般吧\n", encoding="utf-8")
    env = dict(os.environ, DOUBAN_RUNS_DIR=str(demo_run.runs_dir))
    with three.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "score", "--run", "demo", "--json", "-i", "-"],
            stdin=stdin, capture_output=True, env=env, cwd=REPO, timeout=600,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode("utf-8").splitlines()
    assert len(lines) == 3, done.stdout
    records = [json.loads(line) for line in lines]
    assert [r["row"] for r in records] == [0, 1, 2]
    assert [r["text"] for r in records] == three.read_text(encoding="utf-8").splitlines()
    assert all(r["pred_star"] in range(1, 6) for r in records)
    assert b"scored 3 reviews" in done.stderr and b"Traceback" not in done.stderr


@pytest.mark.slow
def test_one_text_or_many_is_json_lines(run_args):
    one = douban("score", *run_args, "--json", "好看")
    assert one.exit_code == 0, one.output
    assert len(one.stdout.splitlines()) == 1 and json.loads(one.stdout)["row"] == 0
    many = douban("score", *run_args, "--json", "好看", "难看", "")
    rows = [json.loads(line) for line in many.stdout.splitlines()]
    assert [r["row"] for r in rows] == [0, 1, 2] and rows[2]["error"] == "empty review"
    assert "scored 3 reviews (1 with errors)" in many.stderr


@pytest.mark.slow
def test_files_in_files_out_keep_stdout_empty(run_args, tmp_path):
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("id,Comment\n1,好看\n2,难看\n3,\n", encoding="utf-8")
    for out, fmt in ((tmp_path / "scored.csv", []), (tmp_path / "scored.jsonl", ["--json"])):
        result = douban("score", *run_args, "-i", str(reviews), "-o", str(out), *fmt)
        assert result.exit_code == 0, result.output
        assert result.stdout == "" and f"into {out}" in result.stderr
        body = out.read_text(encoding="utf-8").splitlines()
        assert len(body) == (4 if out.suffix == ".csv" else 3)
    piped = douban("score", *run_args, "-i", str(reviews))  # a file without -o: CSV on stdout
    assert piped.stdout.splitlines()[0].startswith("row,text,pred_star")
    assert len(piped.stdout.splitlines()) == 4 and "scored 3 reviews" in piped.stderr


@pytest.mark.slow
def test_unknown_model_is_one_line_listing_the_models(run_args):
    line = assert_clean_error(douban("score", *run_args, "--model", "nope", "x"), 1, "'nope'")
    assert "head_cls" in line and "tfidf_lr" in line


@pytest.mark.slow
def test_missing_run_says_it_does_not_exist(demo_run):
    result = douban("score", "--run", "nope", "--runs-dir", str(demo_run.runs_dir), "x")
    line = assert_clean_error(result, 1, "'nope'", "does not exist")
    assert "runs there: demo" in line
    for command in (["models"], ["features"], ["train"], ["report", "--all"]):
        result = douban(*command, "--run", "nope", "--runs-dir", str(demo_run.runs_dir))
        assert_clean_error(result, 1, "does not exist")


@pytest.mark.slow
def test_score_and_models_name_the_same_default_model(demo_run, run_args):
    from pipeline import Run

    scored = douban("score", *run_args, "--json", "剧情拖沓，浪费时间")
    assert scored.exit_code == 0, scored.output
    record = json.loads(scored.stdout)
    listed = douban("models", *run_args, "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    defaults = [r["model"] for r in rows if r["default"]]
    assert defaults == [record["model"]]
    run = Run.open(demo_run.run_name, demo_run.runs_dir)
    assert defaults == [run.default_model]
    recorded = run.metrics.get("default_model", {}).get("name")
    assert recorded in (None, record["model"])
    for row in rows:  # the figures are metrics.json's, split by split
        figures = run.metrics["evaluations"]["random"]["models"][row["model"]]
        for split in ("val", "test"):
            assert row[split]["accuracy"] == figures[split]["accuracy"]
            assert row[split]["qwk"] == figures[split]["qwk"]


@pytest.mark.slow
def test_models_table_on_stdout_legend_on_stderr(run_args):
    result = douban("models", *run_args)
    assert result.exit_code == 0, result.output
    marked = [line for line in result.stdout.splitlines() if line.startswith("* ")]
    assert len(marked) == 1
    assert "validation" in result.stdout and "QWK" in result.stdout
    assert "default model" in result.stderr and "default model" not in result.stdout


@pytest.mark.slow
def test_readable_output_shows_user_text_literally(run_args):
    text = "[/red][bold]好看\x1b]8;;http://evil\x07链接\x1b[2J\x9b31m"
    result = douban("score", *run_args, text)
    assert result.exit_code == 0, result.output
    assert "[/red][bold]好看" in result.stdout
    assert not any(ch in result.stdout for ch in "\x1b\x07\x9b")
    assert "\\x1b]8;;http://evil\\x07" in result.stdout


# ------------------------------------------------------------------------- errors, caught once


def test_unexpected_errors_are_one_line_with_a_pointer_to_v(monkeypatch, tmp_path):
    from pipeline.run import Run

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Run, "open", boom)
    result = douban("models", "--runs-dir", str(tmp_path))
    line = assert_clean_error(result, 1, "RuntimeError", "disk on fire", "run with -v")
    assert line.endswith("(run with -v for the traceback)")
    verbose = douban("-v", "models", "--runs-dir", str(tmp_path))
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr
    assert "run with -v" not in verbose.stderr


def test_douban_errors_show_a_traceback_only_with_v(tmp_path):
    args = ["models", "--run", "nope", "--runs-dir", str(tmp_path)]
    assert_clean_error(douban(*args), 1, "does not exist")
    verbose = douban("-v", *args)
    assert verbose.exit_code == 1
    assert "Traceback" in verbose.stderr and "RunNotFoundError" in verbose.stderr


def test_select_by_qwk_makes_the_best_validation_qwk_the_default(demo_run, tmp_path):
    import shutil

    from pipeline import Run

    runs = tmp_path / "runs"
    shutil.copytree(demo_run.paths.root, runs / "demo")
    args = ["evaluate", "--run", "demo", "--runs-dir", str(runs), "--select-by"]
    result = CliRunner().invoke(app, [*args, "qwk"])
    assert result.exit_code == 0, result.output
    run = Run.open("demo", runs)
    models = run.metrics["evaluations"]["random"]["models"]
    best = max(sorted(models), key=lambda m: models[m]["val"]["qwk"])
    assert run.metrics["default_model"]["metric"] == "qwk"
    assert run.default_model == best
    wrong = CliRunner().invoke(app, [*args, "mae"])
    assert wrong.exit_code == 2 and "select_by" in wrong.output  # a usage error
    assert "Traceback" not in wrong.output
