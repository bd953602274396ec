"""One run, one truth (issue 24): the CLI, the Python API, the HTTP service, the reports and the
app open the same run through ``Run`` and agree on its default model, its model set
(generation) and the stars they give the same reviews."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

import pipeline
from pipeline import Run, film_report
from pipeline.cli import app as cli
from pipeline.serve.app import create_app

TEXTS = ["剧情拖沓，浪费时间", "演员演技在线，值得一看！", "还行吧，中规中矩"]
HOME = Path(__file__).resolve().parents[2] / "app" / "Home.py"

pytestmark = pytest.mark.slow


def test_every_surface_reads_the_same_run(demo_run, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run.open(demo_run.run_name, demo_run.runs_dir)
    default, generation = run.default_model, run.generation
    assert default is not None and generation.startswith("gen-")
    stars = [r.pred_star for r in run.scorer().score(TEXTS)]

    # the public API's shortcut
    api = pipeline.score(TEXTS, run=demo_run.run_name, runs_dir=demo_run.runs_dir)
    assert [r["pred_star"] for r in api] == stars
    assert {r["model"] for r in api} == {default}

    # the CLI
    where = ["--run", demo_run.run_name, "--runs-dir", str(demo_run.runs_dir)]
    listed = CliRunner().invoke(cli, ["models", *where, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["model"] for r in rows if r["default"]] == [default]
    assert {r["generation"] for r in rows} == {generation}
    scored = CliRunner().invoke(cli, ["score", *where, "--json", *TEXTS])
    assert scored.exit_code == 0, scored.output
    records = [json.loads(line) for line in scored.stdout.splitlines()]
    assert [r["pred_star"] for r in records] == stars
    assert {r["model"] for r in records} == {default}

    # the service
    with TestClient(create_app(demo_run.paths.root, load_in_background=False)) as client:
        models = client.get("/v1/models").json()
        assert (models["default"], models["generation"]) == (default, generation)
        answer = client.post("/v1/score", json={"texts": TEXTS}).json()
        assert [r["pred_star"] for r in answer["records"]] == stars

    # the reports
    film = run.films["film"].iloc[0]
    report = film_report(run, film)
    assert (report.model, report.generation) == (default, generation)

    # the app
    monkeypatch.setenv("DOUBAN_RUNS_DIR", str(demo_run.runs_dir))
    monkeypatch.setenv("DOUBAN_RUN", demo_run.run_name)
    at = AppTest.from_file(str(HOME), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key=f"model:{demo_run.run_name}").value == default
    assert generation in "\n".join(c.value for c in at.caption).replace("\\", "")
    at.switch_page("views/score.py").run()
    shown = []
    for text in TEXTS:
        at.text_area(key="score_text").input(text)
        next(b for b in at.form_submit_button if b.label == "Score").click().run()
        shown.append(int({m.label: m.value for m in at.metric}["Predicted star"][0]))
    assert shown == stars
