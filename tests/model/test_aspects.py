"""Aspects per film on a trained run (issue 25): clause-level opinions scored by the run's model,
per-film aspect tables with intervals, and `douban aspects`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline import Run
from pipeline.cli import app
from pipeline.reports.corpus import film_aspects, run_clauses, telling_clauses

pytestmark = pytest.mark.slow


def test_each_clause_is_scored_alone(demo_run) -> None:
    scorer = Run.open(demo_run.run_name, demo_run.runs_dir).scorer("tfidf_lr")
    plot, acting = scorer.aspects("剧情狗血老套，但是演技精湛自然")
    assert plot["aspects"] == {"plot": ["剧情"]} and acting["aspects"] == {"acting": ["演技"]}
    assert plot["sentiment"] < 0 < acting["sentiment"]  # one review, praise and complaint
    effects = scorer.aspects(["特效震撼逼真", "特效五毛廉价", "今天天气不错"])
    assert effects[0][0]["sentiment"] > 0 > effects[1][0]["sentiment"] and effects[2] == []
    denied, said = scorer.aspects("不是剧情不好，是节奏太拖")
    alone = scorer.aspects("不是剧情不好")[0]  # no assertion follows: not a denial
    assert denied["denied"] and not alone["denied"] and not said["denied"]
    assert denied["sentiment"] == pytest.approx(-alone["sentiment"], abs=1e-5)


def test_a_films_aspects_with_intervals_and_telling_clauses(demo_run) -> None:
    run = Run.open(demo_run.run_name, demo_run.runs_dir)
    clauses = run_clauses(run)
    assert set(clauses["aspect"]) >= {"plot", "acting", "visuals"}  # the demo names them
    film = run.films["film"].iloc[0]
    table = film_aspects(run, film)
    mine = clauses[clauses["film"] == film]
    assert table["clauses"].sum() == mine.dropna(subset=["sentiment"]).shape[0]
    assert (table["low"] <= table["mean"]).all() and (table["mean"] <= table["high"]).all()
    assert table["share"].between(0, 1).all() and table["clauses"].is_monotonic_decreasing
    top = table.iloc[0]
    told = telling_clauses(run, film, top["aspect"], k=3)
    assert len(told["praise"]) <= 3 and all(c["sentiment"] > 0.25 for c in told["praise"])
    assert all(c["sentiment"] < -0.25 for c in told["complaint"])
    assert all(c["words"] for c in told["praise"] + told["complaint"])
    head = run.attention_model(run.default_model)
    for c in told["praise"] + told["complaint"]:  # the head's attention on the clause alone
        expected = run.scorer(head).explain(c["clause"])
        assert c["attention_model"] == head and c["attention_text"] == expected.clean_text
        assert [w[:3] for w in c["attention_words"]] == [list(w[:3]) for w in expected.words]
        weights = [w[3] for w in expected.words]  # read alone here, in one batch there
        assert [w[3] for w in c["attention_words"]] == pytest.approx(weights, abs=1e-6)


def test_the_scored_clauses_are_kept_for_the_next_process(demo_run) -> None:
    first = Run.open(demo_run.run_name, demo_run.runs_dir)
    clauses = run_clauses(first)
    kept = first.kept.analytics_dir("tfidf_lr") / "aspect-clauses"
    assert (kept / "manifest.json").is_file() and len(clauses)
    again = Run.open(demo_run.run_name, demo_run.runs_dir)  # as a new process opens it
    read = run_clauses(again)
    assert again.kept.memoised("scorer") == []  # read back: no model was loaded to score
    assert read.drop(columns="words").equals(clauses.drop(columns="words"))
    assert [list(w) for w in read["words"]] == [list(w) for w in clauses["words"]]


def test_douban_aspects_prints_a_table_and_json(demo_run) -> None:
    film = Run.open(demo_run.run_name, demo_run.runs_dir).films["film"].iloc[0]
    where = ["--run", demo_run.run_name, "--runs-dir", str(demo_run.runs_dir), "--film", film]
    shown = CliRunner().invoke(app, ["aspects", *where])
    assert shown.exit_code == 0, shown.output
    assert "acting & cast" in shown.stdout and "clauses scored one by one" in shown.stderr
    listed = CliRunner().invoke(app, ["aspects", *where, "--json"])
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {"aspect", "mean", "low", "high", "praise", "complaint"} <= set(rows[0])
    missing = CliRunner().invoke(app, ["aspects", *where[:-1], "没有这部电影"])
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    words = CliRunner().invoke(app, ["aspects", *where[:-2], "--terms", "--json"])
    listed = {
        json.loads(line)["aspect"]: json.loads(line)["words"] for line in words.stdout.splitlines()
    }
    assert "演技" in listed["acting"] and set(listed) >= {"plot", "music", "emotion"}


def test_the_runs_settings_add_words_and_aspects(demo_run, tmp_path) -> None:
    import shutil

    from pipeline.artifacts import read_json, write_json
    from pipeline.reports.corpus import run_terms

    shutil.copytree(demo_run.paths.root, tmp_path / "demo")
    recorded = read_json(tmp_path / "demo" / "settings.json")
    recorded["aspects"] = {"terms": {"plot": ["脑洞"], "costume": ["服装", "造型"]},
                           "extend": False}  # fmt: skip
    write_json(tmp_path / "demo" / "settings.json", recorded)
    terms = run_terms(Run.open(tmp_path / "demo"))
    assert terms["plot"][-1] == "脑洞" and terms["costume"] == ["服装", "造型"]
    assert terms["acting"] == list(
        __import__("pipeline.data.aspects").data.aspects.ASPECTS["acting"][2]
    )
