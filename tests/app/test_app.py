"""The Streamlit app, page by page, with streamlit's AppTest on real runs: the small trained demo
run of the session (``demo_run``), a run with prepared data only, and no run at all. User text
(URL parameters, reviews, file names) must reach the page as plain text, never as Markdown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import pipeline
from pipeline import Run, model_name
from pipeline.config import load_settings

HOME = Path(__file__).resolve().parents[2] / "app" / "Home.py"
TIMEOUT = 180  # the first score loads the encoder; t-SNE and reports take seconds on 2 cores
FILM_SECTIONS = ["Stars", "Map", "Words", "Aspects", "Attention", "Time & likes", "League"]


def open_app(monkeypatch: pytest.MonkeyPatch, run_dir: Path, page: str | None = None) -> AppTest:
    """The app on ``run_dir`` (through the environment, as `douban app --run` passes it)."""
    monkeypatch.setenv("DOUBAN_RUNS_DIR", str(run_dir.parent))
    monkeypatch.setenv("DOUBAN_RUN", run_dir.name)
    at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT).run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert_ok(at)
    return at


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def unescaped(markdown: str) -> str:
    """Markdown source as the reader sees it (the app backslash-escapes user text)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "prepared" / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def trained(demo_run) -> Path:
    """The session's small trained demo run (conftest.demo_run, a Settings)."""
    return demo_run.paths.root


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with prepared data and nothing else: no features, no model."""
    from pipeline.data.demo import generate_demo_corpus
    from pipeline.data.prepare import prepare_run

    root = tmp_path_factory.mktemp("prepared_only")
    csv = generate_demo_corpus(root / "demo_reviews.csv", n_reviews=150, seed=3)
    settings = load_settings(run_name="untrained", runs_dir=root / "runs", **{"prepare.workers": 1})
    prepare_run(settings, [csv])
    return settings.paths.root


# ------------------------------------------------------------------------------ trained run


def test_overview_shows_dataset_and_every_model(monkeypatch, trained: Path) -> None:
    at = open_app(monkeypatch, trained)
    summary = summary_of(trained)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["reviews kept"] == f"{summary['kept']:,}"
    assert metrics["films"] == str(len(summary["films"]))
    assert "generated demo data" in texts(at.sidebar.warning)
    evaluated = json.loads(Run.open(trained).paths.metrics.read_text(encoding="utf-8"))
    models = evaluated["evaluations"]["random"]["models"]
    by_name = {model_name(m): m for m in models}
    table = next(f.value for f in at.dataframe if "Exact" in f.value.columns)
    assert set(table["Model"]) == {model_name(m) for m, v in models.items() if v["test"].get("n")}
    for row in table.to_dict("records"):  # the numbers are metrics.json's, best first
        test = models[by_name[row["Model"]]]["test"]
        assert row["Exact"] == pytest.approx(test["accuracy"])
        assert row["MAE"] == pytest.approx(test["mae"])
    assert table["Exact"].is_monotonic_decreasing
    default = Run.open(trained).default_model
    assert table.loc[table["Model"] == model_name(default)].iloc[0][""] == "default"
    # the val split re-sorts the table, and the bars follow the table's order
    at.segmented_control(key="split:random").set_value("val").run()
    assert_ok(at)
    val = next(f.value for f in at.dataframe if "Exact" in f.value.columns)
    assert val["Exact"].is_monotonic_decreasing
    assert val["Exact"].tolist() != table["Exact"].tolist() or len(val) == 1
    assert at.toggle(key="norm:random").value is True
    at.toggle(key="norm:random").set_value(False).run()
    assert_ok(at)


def test_films_every_section_of_every_kind_of_film(monkeypatch, trained: Path) -> None:
    films = Run.open(trained).films["film"].tolist()  # most reviewed first
    at = open_app(monkeypatch, trained, "films")
    assert len(at.selectbox(key=f"film:{trained.name}").options) == len(films)
    # the most and the least reviewed film (the demo corpus has films with a handful of reviews)
    for film in (films[0], films[-1]):
        at.selectbox(key=f"film:{trained.name}").set_value(film).run()
        assert_ok(at)
        for section in FILM_SECTIONS:
            at.session_state["film_section"] = section
            at.run()
            assert_ok(at)
    at.selectbox(key=f"film:{trained.name}").set_value(films[0]).run()
    at.session_state["film_section"] = "Words"
    at.run()
    assert len(at.get("image")) >= 1  # word clouds


def test_the_aspects_tab_shows_the_films_aspects_and_their_clauses(monkeypatch, trained) -> None:
    run = Run.open(trained)
    film = run.films["film"].iloc[0]
    table = pipeline.film_aspects(run, film)
    at = open_app(monkeypatch, trained, "films")
    at.session_state["film_section"] = "Aspects"
    at.run()
    assert_ok(at)
    picker = at.selectbox(key="aspect")
    assert picker.options == (table["name"] + " " + table["english"]).tolist()
    told_by = {a: pipeline.telling_clauses(run, film, a) for a in table["aspect"]}
    aspect = next(a for a, t in reversed(told_by.items()) if t["praise"] or t["complaint"])
    picker.set_value(aspect).run()
    told = told_by[aspect]
    shown = texts(at.get("html"))
    for clause in told["praise"] + told["complaint"]:
        assert clause["words"][0] in shown  # highlighted words of each telling clause
    assert 'class="att"' in shown


def test_film_found_by_english_name(monkeypatch, trained: Path) -> None:
    row = Run.open(trained).films.iloc[-1]
    at = open_app(monkeypatch, trained)
    at.switch_page("views/films.py")
    at.query_params["film"] = str(row.film_en).upper()  # a link such as ?film=IRON MAN
    at.run()
    assert_ok(at)
    assert at.selectbox(key=f"film:{trained.name}").value == row.film
    assert {m.label: m.value for m in at.metric}["reviews"] == f"{row.reviews:,}"


@pytest.mark.parametrize(
    "payload",
    [
        "[urgent: log in again](http://evil.example/login)",
        "![tracker](http://evil.example/pixel.png)",
        ":red[**account locked**] :material/warning: $x^2$",
        "<img src=x onerror=alert(1)>",
    ],
)
def test_film_url_parameter_is_shown_as_plain_text(monkeypatch, trained: Path, payload) -> None:
    """A crafted ?film= link cannot put a link, image, colour or icon on the page: the warning
    shows the text as typed (every Markdown character escaped)."""
    at = open_app(monkeypatch, trained)
    at.switch_page("views/films.py")
    at.query_params["film"] = payload
    at.run()
    assert not at.exception
    assert "not in this run" in texts(at.warning)
    assert payload not in texts(at.warning) + texts(at.markdown) + texts(at.caption)
    assert payload in texts(at.text)  # plain text: shown as typed, never rendered


def test_user_text_in_markdown_is_inert() -> None:
    """What ``common.plain`` hands to Markdown: every punctuation mark escaped, bare URLs and
    addresses broken, and the reader still sees the same characters."""
    import sys

    sys.path.insert(0, str(HOME.parent))
    from common import plain

    for text in ["[a](http://evil.example/x)", "see www.evil.example", "me@evil.example",
                 ":red[x] :material/home: $x$ **b** <b>", "好看!"]:  # fmt: skip
        shown = plain(text)
        assert not re.search(r"(?<!\\)[\[\]()*:$<>!_`]", shown), shown
        assert "://" not in shown and "www." not in shown.lower() and "@evil" not in shown
        assert unescaped(shown).replace("\u200b", "") == text


def test_score_a_typed_review_shows_a_star(monkeypatch, trained: Path) -> None:
    at = open_app(monkeypatch, trained, "score")
    at.text_area(key="score_text").input("剧情紧凑 <3 演员演技在线 & 值得一看！<b>")
    next(b for b in at.form_submit_button if b.label == "Score").click().run()
    assert_ok(at)
    metrics = {m.label: m.value for m in at.metric}
    star = metrics["Predicted star"]
    assert star[0] in "12345"
    assert "★" in star
    highlighted = texts(at.get("html"))
    assert "&lt;" in highlighted and "<3" not in highlighted  # user text is escaped
    assert "&amp;" in highlighted
    assert 'class="att"' in highlighted
    default = Run.open(trained).default_model
    assert f"({default})" in unescaped(texts(at.caption))  # says which model; the default


def test_score_card_follows_the_model(monkeypatch, trained: Path) -> None:
    """One model's outputs, named; picking another model in the sidebar rescores the review."""
    at = open_app(monkeypatch, trained, "score")
    at.text_area(key="score_text").input("剧情拖沓，浪费时间")
    next(b for b in at.form_submit_button if b.label == "Score").click().run()
    run = Run.open(trained)
    other = next(m for m in run.saved_models if m != run.default_model and m != "majority")
    at.selectbox(key=f"model:{trained.name}").set_value(other).run()
    assert_ok(at)
    shown = unescaped(texts(at.caption))
    assert f"Every number below is from {model_name(other)} ({other})" in shown
    assert run.scorer(other).explain("剧情拖沓，浪费时间").pred_star == int(
        {m.label: m.value for m in at.metric}["Predicted star"][0]
    )


def test_score_example_button_fills_the_box(monkeypatch, trained: Path) -> None:
    at = open_app(monkeypatch, trained, "score")
    example = next(b for b in at.button if b.label.endswith("★ review"))
    example.click().run()
    assert at.text_area(key="score_text").value


def test_batch_scoring_of_a_parquet_file(monkeypatch, trained: Path) -> None:
    import io

    import pandas as pd

    at = open_app(monkeypatch, trained, "score")
    buffer = io.BytesIO()
    pd.DataFrame({"Comment": ["好看", "难看死了"]}).to_parquet(buffer)
    at.file_uploader(key="batch_upload").set_value(("mine.parquet", buffer.getvalue(), ""))
    at.run()
    assert_ok(at)
    assert "Scored 2 reviews (0 could not be scored)" in texts(at.success)
    assert at.dataframe[-1].value["text"].tolist() == ["好看", "难看死了"]


def test_batch_scoring_of_a_csv(monkeypatch, trained: Path) -> None:
    at = open_app(monkeypatch, trained, "score")
    body = "id,comment\n1,好看\n2,难看死了\n3,\n".encode()
    at.file_uploader(key="batch_upload").set_value(("mine.csv", body, "text/csv"))
    at.run()
    assert_ok(at)
    assert "Scored 3 reviews (1 could not be scored)" in texts(at.success)
    frame = at.dataframe[-1].value
    assert len(frame) == 3 and {"pred_star", "prob_5", "error"} <= set(frame.columns)
    assert frame["row"].tolist() == [0, 1, 2]  # as `douban score` and the service number them
    assert frame["pred_star"].iloc[:2].between(1, 5).all()
    assert at.get("download_button")


def test_batch_scoring_skips_blank_lines(monkeypatch, trained: Path) -> None:
    at = open_app(monkeypatch, trained, "score")
    body = "好看\n\n   \n难看死了\n".encode()
    at.file_uploader(key="batch_upload").set_value(("mine.txt", body, "text/plain"))
    at.run()
    assert_ok(at)
    assert "Scored 2 reviews (0 could not be scored; 2 blank lines skipped)" in texts(at.success)
    assert len(at.dataframe[-1].value) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"a,b\n1,2\n", "no review column"),
        (b"comment\n", "has no reviews"),
        (b"comment\n" + "好看\n".encode() * 2001, "scores up to"),
    ],
)
def test_a_bad_csv_gets_a_readable_error(monkeypatch, trained: Path, body, message) -> None:
    at = open_app(monkeypatch, trained, "score")
    at.file_uploader(key="batch_upload").set_value(("bad.csv", body, "text/csv"))
    at.run()
    assert not at.exception
    assert message in texts(at.error)


def test_reports_page_writes_a_film_report(monkeypatch, trained: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("DOUBAN_REPORTS_DIR", str(tmp_path))
    at = open_app(monkeypatch, trained, "reports")
    film = Run.open(trained).films["film"].iloc[-1]
    at.multiselect(key="report_films").set_value([film]).run()
    next(b for b in at.button if b.label == "Generate").click().run()
    assert_ok(at)
    written = sorted(p.name for p in (tmp_path / trained.name).glob("*.html"))
    assert "index.html" in written and len(written) == 2
    assert "Wrote 2 page(s)" in unescaped(texts(at.success))
    assert at.selectbox(key="report_page").options
    at.toggle(key="report_open").set_value(True).run()  # the report, inside the app
    assert_ok(at)
    # a film link inside the open index: ?report=<page> opens that page here
    page = next(n for n in written if n != "index.html")
    at.query_params["report"] = page
    at.switch_page("views/reports.py").run()
    assert_ok(at)
    assert at.selectbox(key="report_page").value.name == page
    assert at.toggle(key="report_open").value


def test_an_open_report_links_its_pages_back_into_the_app() -> None:
    html = '<a href="钢铁侠1.html">a</a> <a href="https://x.org/b.html">b</a> <a href="#c">c</a>'
    assert pipeline.embeddable_page(html, "report") == (
        '<a href="?report=钢铁侠1.html" target="_blank">a</a> '
        '<a href="https://x.org/b.html">b</a> <a href="#c">c</a>'
    )


def test_model_lab_without_results_says_how_to_make_them(monkeypatch, trained: Path) -> None:
    if (trained / "lab").exists():
        pytest.skip("the demo run has lab results")
    at = open_app(monkeypatch, trained, "lab")
    assert f"douban lab all --run {trained.name}" in texts(at.code)
    assert "Probes" in texts(at.markdown)  # what the page will hold


# ---------------------------------------------------------------- a run of another encoder


def short_reviews_csv(path: Path, n: int = 300) -> Path:
    """A DMSC-format CSV of short reviews the tiny tokenizer can read (its max length is 64):
    two films, and a third with three reviews."""
    import csv

    from tiny_bert import demo_reviews

    texts, stars = demo_reviews(n, seed=5)
    films = [("好电影", "Good Film")] * (n - 3) + [("小片", "Tiny Film")] * 3
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Movie_Name_EN", "Movie_Name_CN", "Date", "Star", "Comment", "Like"])
        for i, (text, star, (cn, en)) in enumerate(zip(texts, stars, films, strict=True)):
            writer.writerow([en, cn, f"2016-0{1 + i % 9}-1{i % 10}", star, text, i % 7])
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run on a tiny random BERT (not e5): prepared demo reviews, features, a self-attentive
    head, a fine-tuned encoder and every lab view, all small enough for seconds on a CPU."""
    import torch
    from tiny_bert import tiny_bert, tiny_tokenizer

    from pipeline.data.prepare import prepare_run
    from pipeline.features.extract import extract_features
    from pipeline.lab.run import run_lab
    from pipeline.workflow import finetune_run, train_run

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_run")
    encoder = root / "tiny-encoder"
    tokenizer = tiny_tokenizer()
    tiny_bert(len(tokenizer)).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    csv = short_reviews_csv(root / "demo_reviews_tiny.csv")
    settings = load_settings(
        run_name="tiny",
        runs_dir=root / "runs",
        **{
            "prepare.workers": 1,
            "features.encoder": str(encoder),
            "features.prefix": "query: ",
            "features.max_length": 32,
            "features.device": "cpu",
            "head.epochs": 2,
            "finetune.train_limit": 64,
            "finetune.epochs": 1,
            "finetune.batch_size": 16,
            "finetune.eval_every": 2,
            "finetune.max_length": 32,
            "finetune.device": "cpu",
            "lab.eval_reviews": 30,
            "lab.probe_train_reviews": 60,
            "lab.words": ["好看"],
            "lab.word_reviews": 20,
            "lab.head_reviews": 6,
            "lab.tsne": False,
            "lab.device": "cpu",
        },
    )
    prepare_run(settings, [csv])
    extract_features(settings)
    train_run(settings, ["majority", "head_cls"], progress=False)
    finetune_run(settings, progress=False)
    run_lab(settings, progress=False)
    return settings.paths.root


LAB_SECTIONS = [
    "Findings",
    "Probes",
    "Geometry",
    "Projections",
    "Word in context",
    "Attention heads",
]


def test_model_lab_shows_every_view(monkeypatch, tiny_run: Path) -> None:
    at = open_app(monkeypatch, tiny_run, "lab")
    for section in LAB_SECTIONS:
        at.session_state["lab_section"] = section
        at.run()
        assert_ok(at)
        assert not at.info, (section, texts(at.info))  # every part was computed
    # the head view of the last section: a layer x head heatmap per example review
    at.slider(key="head_layer").set_value(1).run()
    assert_ok(at)


def test_other_encoder_run_scores_and_shows_films(monkeypatch, tiny_run: Path) -> None:
    at = open_app(monkeypatch, tiny_run, "score")
    model = Run.open(tiny_run).default_model
    assert f"({model})" in unescaped(texts(at.caption))
    assert (Run.open(tiny_run).paths.model(model) / "config.json").exists()
    at.text_area(key="score_text").input("这部电影好看，演员精彩！")
    next(b for b in at.form_submit_button if b.label == "Score").click().run()
    assert_ok(at)
    assert {m.label: m.value for m in at.metric}["Predicted star"][0] in "12345"
    at.switch_page("views/films.py").run()
    for film in ("好电影", "小片"):  # 297 reviews, and 3: too few for a map
        at.selectbox(key="film:tiny").set_value(film).run()
        for section in FILM_SECTIONS:
            at.session_state["film_section"] = section
            at.run()
            assert_ok(at)
    at.session_state["film_section"] = "Map"
    at.run()
    assert "too few for a map" in texts(at.info)  # the 3-review film says so instead of failing


# ---------------------------------------------------------------------- untrained / no runs


@pytest.mark.parametrize("page", [None, "films", "score", "reports", "lab"])
def test_every_page_works_on_a_run_without_a_model(monkeypatch, prepared_run: Path, page) -> None:
    at = open_app(monkeypatch, prepared_run, page)
    if page in (None, "score"):
        assert f"douban train --run {prepared_run.name}" in texts(at.code)
    if page == "films":
        for section in FILM_SECTIONS:
            at.session_state["film_section"] = section
            at.run()
            assert_ok(at)


def test_no_run_at_all(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOUBAN_RUNS_DIR", str(tmp_path))
    monkeypatch.delenv("DOUBAN_RUN", raising=False)
    at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "douban demo" in texts(at.code)


def test_run_picker_lists_only_runs_with_models(monkeypatch, trained, prepared_run, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "trained").symlink_to(trained, target_is_directory=True)
    (runs / "untrained").symlink_to(prepared_run, target_is_directory=True)
    monkeypatch.setenv("DOUBAN_RUNS_DIR", str(runs))
    monkeypatch.delenv("DOUBAN_RUN", raising=False)
    at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT).run()
    assert_ok(at)
    assert at.selectbox(key="run").options == ["trained"]


def test_an_unknown_run_in_the_url_is_said(monkeypatch, trained: Path) -> None:
    monkeypatch.setenv("DOUBAN_RUNS_DIR", str(trained.parent))
    monkeypatch.delenv("DOUBAN_RUN", raising=False)
    at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT)
    at.query_params["run"] = "[nope](http://evil.example)"
    at.run()
    assert not at.exception
    warning = unescaped(texts(at.warning))
    assert "no run named [nope](http://evil.example)" in warning.replace("\u200b", "")
    assert f"showing {trained.name} instead" in warning
