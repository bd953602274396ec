"""HTML reports: every section present, self-contained (inline Vega charts, no URL), review text
escaped, film names that cannot escape reports/<run>/, cached analytics artifacts, and a page that
a real browser draws offline (headless Chromium, skipped where it is not installed)."""

from __future__ import annotations

import html
import json
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import FilmNotFoundError, ModelNotFoundError, Run
from pipeline.config import Settings
from pipeline.reports.film import SECTIONS, FilmReport
from pipeline.reports.names import film_file_names, model_name
from pipeline.reports.site import write_reports
from pipeline.reports.store import film_report
from tests.synthetic_run import SCRIPT_REVIEW, make_run

CHROMIUM = Path("/usr/bin/chromium")


class PageParser(HTMLParser):
    """Collects what the tests check: element ids, tags, URLs and visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self.script_src: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_script = tag == "script"
        if tag == "script":
            self.script_src += [v or "" for k, v in attrs if k == "src"]
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href") and value is not None:
                self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def assert_self_contained(page: PageParser) -> None:
    """No external URL, stylesheet link or script file: scripts are inline (the Vega bundle)."""
    external = [u for u in page.urls if u.startswith(("http:", "https:", "//"))]
    assert not external, external
    assert "link" not in page.tags and not page.script_src


@pytest.fixture(scope="module")
def synthetic_pages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("reports")
    run = make_run(root / "runs" / "synthetic")
    return write_reports(
        run, ["Iron Man", "小电影"], reports_dir=root / "reports", tsne_cap=50, progress=False
    )


def test_film_pages_have_every_section_and_no_external_url(synthetic_pages: list[Path]) -> None:
    iron_man, small, index = synthetic_pages
    assert [p.name for p in synthetic_pages] == ["钢铁侠1.html", "小电影.html", "index.html"]
    for path in (iron_man, small):
        page = parse(path)
        assert set(SECTIONS) <= page.ids
        assert_self_contained(page)
        assert "Demo data" in "".join(page.text)
        assert path.stat().st_mode & 0o444 == 0o444
    raw = iron_man.read_text(encoding="utf-8")
    charts = {key for key in SECTIONS if f'vegaEmbed("#chart-{key}"' in raw}
    assert charts == {"stars", "confusion", "trend", "league"}  # no features: no map
    clouds = [u for u in parse(iron_man).urls if u.startswith("data:image/png;base64,")]
    assert len(clouds) >= 2  # the film's word cloud and the stars'


def test_the_reports_stage_says_its_plan_and_the_run_wide_numbers_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = make_run(tmp_path / "runs" / "synthetic")
    with caplog.at_level(logging.INFO, logger="pipeline.reports"):
        write_reports(run, ["Iron Man"], reports_dir=tmp_path / "reports", progress=False)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("pipeline.reports")]
    plan, numbers, wrote = (next(i for i, m in enumerate(said) if m.startswith(start))
                            for start in ("reports plan: 1 film page", "run-wide numbers of run",
                                          "wrote 2 report pages"))  # fmt: skip
    assert plan < numbers < wrote
    for part in ("film top words", "film league", "star mixes", "aspect words", "aspect clauses"):
        assert re.search(rf"{part} \d+\.\d s", said[numbers]), part


def test_review_text_is_escaped(synthetic_pages: list[Path]) -> None:
    raw = synthetic_pages[0].read_text(encoding="utf-8")
    page = parse(synthetic_pages[0])
    assert SCRIPT_REVIEW not in raw and "<img src=x" not in raw and "</script><img" not in raw
    assert "&lt;script&gt;" in raw  # in the tables
    assert SCRIPT_REVIEW in "".join(page.text)  # shown to the reader as the text it is


def test_chart_data_cannot_close_its_script_element() -> None:
    """Review text in a chart's data (the t-SNE tooltips) is JSON with <, > and & escaped, and
    still reads as the same text."""
    from pipeline.reports import charts

    points = pd.DataFrame({"x": [0.0], "y": [1.0], "star": [1], "text": [SCRIPT_REVIEW]})
    spec = charts.spec_json(charts.scatter_map(points))
    assert not {"<", ">", "&"} & set(spec)
    values = [v for d in json.loads(spec)["datasets"].values() for v in d]
    assert values[0]["review"] == SCRIPT_REVIEW


def test_a_film_without_dates_or_likes_says_so(synthetic_pages: list[Path]) -> None:
    text = " ".join(parse(synthetic_pages[1]).text)
    assert "no dates in this data" in text
    assert "no likes in this data" in text
    assert "no features in this run" in text


def test_index_links_the_written_pages(synthetic_pages: list[Path]) -> None:
    page = parse(synthetic_pages[2])
    links = [u for u in page.urls if u.endswith(".html")]
    assert sorted(links) == sorted(["%E9%92%A2%E9%93%81%E4%BE%A01.html",
                                    "%E5%B0%8F%E7%94%B5%E5%BD%B1.html"])  # fmt: skip
    assert_self_contained(page)
    text = "".join(page.text)
    assert "何以笙箫默" in text and "Film league" in text  # listed though it has no page


def test_report_data_matches_the_predictions(tmp_path: Path) -> None:
    run = Run.open(make_run(tmp_path / "synthetic"))
    report = FilmReport.build(run, run.resolve_film("My Sunshine"), "majority", tsne_cap=50)
    assert report.film == "何以笙箫默" and report.model == "majority"
    test = run.predictions.query("model == 'majority' and split == 'test' and film == '何以笙箫默'")
    assert report.summary["n"] == len(test)
    assert report.summary["mean_pred"] == 4.0
    assert report.distribution["predicted"].tolist() == [0, 0, 0, len(test), 0]
    assert report.confusion_counts.to_numpy().sum() == len(test)
    assert report.league["film"].nunique() == 3
    with pytest.raises(FilmNotFoundError, match="钢铁侠1"):
        film_report(run, "Titanic")
    with pytest.raises(ModelNotFoundError, match="no predictions of model"):
        film_report(run, "钢铁侠1", model="bert_xl")
    with pytest.raises(ValueError, match="--all"):
        write_reports(tmp_path / "synthetic")
    assert report.small_sample  # a handful of test reviews: the page says so
    low, high = report.exact_ci
    assert low <= report.summary["exact"] <= high


def test_film_report_is_a_cached_artifact(tmp_path: Path) -> None:
    """Built once, then read back from runs/<run>/analytics/ with the same numbers; a changed
    input (predictions rewritten) rebuilds it."""
    root = make_run(tmp_path / "synthetic")
    built = film_report(Run.open(root), "Iron Man", "head_cls", tsne_cap=50)
    folder = Run.open(root).kept.analytics_dir("head_cls") / "films" / "钢铁侠1.map-50"
    assert (folder / "manifest.json").exists() and (folder / "parts.json").exists()
    stamp = (folder / "parts.json").stat().st_mtime_ns
    again = film_report(Run.open(root), "钢铁侠1", "head_cls", tsne_cap=50)
    assert (folder / "parts.json").stat().st_mtime_ns == stamp  # read, not rebuilt
    assert again.summary == built.summary and again.exact_ci == built.exact_ci
    pd.testing.assert_frame_equal(again.confusion_counts, built.confusion_counts)
    pd.testing.assert_frame_equal(again.league, built.league)
    assert again.clouds == built.clouds and again.attention == built.attention
    assert (
        again.likes["top_liked"]["comment"].tolist() == built.likes["top_liked"]["comment"].tolist()
    )
    for star in again.star_words:
        pd.testing.assert_frame_equal(again.star_words[star], built.star_words[star])
    predictions = root / "predictions.parquet"
    pd.read_parquet(predictions).to_parquet(predictions)  # same rows, new file
    film_report(Run.open(root), "钢铁侠1", "head_cls", tsne_cap=50)
    assert (folder / "parts.json").stat().st_mtime_ns != stamp


HOSTILE_FILMS = [
    "冰川时代5：星际碰撞",
    "a/b",
    "a?b",
    "../x",
    "..",
    ".",
    "",
    "   ",
    "/etc/passwd",
    "C:\\Windows\\evil",
    "..\\..\\evil",
    "CON",
    "nul.txt",
    "Lpt1",
    "\x00\x1b[31m",
    "ｆｕｌｌ／ｗｉｄｔｈ",
    "é" * 300,
    "x" * 300,
]


def test_film_file_names_never_leave_the_reports_folder(tmp_path: Path) -> None:
    names = film_file_names(HOSTILE_FILMS)
    assert names["冰川时代5：星际碰撞"] == "冰川时代5_星际碰撞.html"
    assert len(set(names.values())) == len(HOSTILE_FILMS)  # unique
    out_dir = tmp_path / "reports" / "run"
    for film, name in names.items():
        assert name.endswith(".html") and not name.startswith((".", "-")), (film, name)
        assert "/" not in name and "\\" not in name and "\x00" not in name
        assert name.split(".")[0].casefold() not in {"con", "nul", "lpt1"}
        assert len(name.encode()) < 255
        assert (out_dir / name).resolve().parent == out_dir.resolve()


@pytest.fixture(scope="module")
def demo_pages(demo_run: Settings, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    run = Run.open(demo_run.paths.root)
    film = str(run.films["film"].iloc[0])
    return write_reports(
        demo_run, [film], reports_dir=tmp_path_factory.mktemp("demo_reports"), tsne_cap=300,
        progress=False,
    )  # fmt: skip


@pytest.mark.slow
def test_demo_run_report(demo_pages: list[Path]) -> None:
    film_page, index = demo_pages
    page = parse(film_page)
    assert set(SECTIONS) <= page.ids
    assert_self_contained(page)
    text = "".join(page.text)
    assert "Demo data" in text
    assert "no features" not in text and "no dates" not in text
    # the demo run trains head models: reviews are highlighted word by word
    assert film_page.read_text(encoding="utf-8").count('class="att"') > 10
    assert_self_contained(parse(index))


@pytest.mark.slow
@pytest.mark.browser
def test_demo_report_renders_in_a_browser_offline(demo_pages: list[Path], tmp_path: Path) -> None:
    """Chromium draws every chart of the page (inline Vega), logs no console error and asks for
    nothing beyond the file itself; the screenshot stays in the test's tmp dir."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(demo_pages[0].as_uri())
        page.wait_for_selector("#chart-stars svg", timeout=60_000)
        page.wait_for_timeout(1000)
        drawn = page.locator(".chart svg").count()
        charts = page.locator(".chart").count()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert charts >= 5 and drawn == charts  # stars, confusion, map, trend, league
    pixels = np.asarray(Image.open(tmp_path / "report.png").convert("L"), dtype=float)
    assert pixels.std() > 20  # text, charts and tables, not a blank page


def test_cli_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    make_run(tmp_path / "runs" / "synthetic")
    config = tmp_path / "douban.toml"
    config.write_text(f'reports_dir = "{tmp_path / "reports"}"\n', encoding="utf-8")
    args = ["report", "--config", str(config), "--run", "synthetic",
            "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--film", "tiny film"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "synthetic" / "小电影.html").exists()
    result = CliRunner().invoke(app, [*args, "--film", "Titanic"])
    assert result.exit_code == 1 and "Iron Man" in result.output
    elsewhere = tmp_path / "elsewhere"  # --reports-dir wins over the config file
    result = CliRunner().invoke(app, [*args, "--reports-dir", str(elsewhere), "--all"])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "synthetic" / "index.html").exists()


def test_suggested_commands_reach_the_same_run(monkeypatch, tmp_path: Path) -> None:
    from pipeline.config import PROJECT_ROOT, douban_command

    monkeypatch.setenv("DOUBAN_RUNS_DIR", str(PROJECT_ROOT / "runs"))
    monkeypatch.delenv("DOUBAN_REPORTS_DIR", raising=False)
    assert douban_command("train", "demo") == "douban train --run demo"
    monkeypatch.setenv("DOUBAN_RUNS_DIR", str(tmp_path / "my runs"))
    monkeypatch.setenv("DOUBAN_REPORTS_DIR", str(tmp_path / "pages"))
    assert douban_command("train", "demo") == (
        f"douban train --run demo --runs-dir '{tmp_path / 'my runs'}'"
    )
    assert douban_command("report --all", "demo").endswith(f"--reports-dir {tmp_path / 'pages'}")


def test_tables_read_as_people_write_them() -> None:
    """Human headers and model names, "-" for missing, one percentage format, counts with
    thousands separators; the app's styled tables keep the numbers (so they sort)."""
    from pipeline.reports.names import format_value, glossary, human, model_name, styled_table

    frame = pd.DataFrame(
        {"model": ["pooled_lr_layers", "brand_new"], "n": [12345, 7],
         "accuracy": [0.4567, None], "mae": [1.2345, np.nan]}
    )  # fmt: skip
    shown = human(frame)
    assert list(shown.columns) == ["Model", "Reviews", "Exact", "MAE"]
    assert shown["Model"].tolist() == ["Encoder layers + logistic", "brand_new"]
    assert [format_value(v, "Exact") for v in shown["Exact"]] == ["45.7%", "-"]
    assert format_value(12345, "Reviews") == "12,345" and format_value(None, "MAE") == "-"
    html = styled_table(frame).to_html()
    assert "45.7%" in html and "None" not in html and "nan" not in html
    assert styled_table(frame).data["Exact"].iloc[0] == 0.4567  # sorted on the number
    assert model_name(None) == "-"
    terms = glossary(["head_cls"])
    assert terms.iloc[0]["Term"] == "Attention head (classes)" and "QWK" in set(terms["Term"])


def test_the_film_headline_compares_like_with_like(tmp_path: Path) -> None:
    """The mean predicted star sits beside the true mean of the same evaluated reviews."""
    from pipeline.reports.render import render_film

    run = Run.open(make_run(tmp_path / "synthetic"))
    report = film_report(run, run.films["film"].iloc[0])
    page = render_film(report)
    s = report.summary
    assert f"true mean on the same {s['n']:,}" in page
    assert f"mean star (all {report.reviews:,} reviews)" in page


def test_attention_examples_name_the_model_that_predicted_them(demo_run) -> None:
    from pipeline.reports.render import render_film

    run = Run.open("demo", demo_run.runs_dir)
    report = film_report(run, run.films["film"].iloc[0], model="tfidf_lr", tsne_cap=100)
    page = render_film(report)
    assert report.attention and report.attention_model != "tfidf_lr"  # a head explains it
    assert f"{model_name(report.attention_model)} predicted" in page
    assert "not those of" in page


def test_every_metric_header_explains_itself() -> None:
    from pipeline.reports.names import METRIC_NAMES, column_help, human

    frame = pd.DataFrame(columns=["model", "accuracy", "ece", "median_star_accuracy",
                                  "expected_star_mae", "rank_true", "film"])  # fmt: skip
    headers = list(human(frame).columns)
    helps = column_help(headers)
    assert set(helps) == set(headers) - {"Model", "Film"}
    assert "calibration" in helps["ECE"] and "median" in helps["Median-star exact"]
    unexplained = {h for h in METRIC_NAMES.values() if h not in column_help([h])}
    assert unexplained <= {"Model", "Film", "Word", "Count", "Score", "Reviews", "Mean star",
                           "Mean predicted", "Mean true"}  # fmt: skip


def test_the_film_league_has_one_legend() -> None:
    from pipeline.reports.charts import film_league

    table = pd.DataFrame({"film": ["a", "b"], "evaluated": [10, 12], "mean_true": [3.0, 4.0],
                          "mean_pred": [3.2, 3.8]})  # fmt: skip
    spec = film_league(table, "a").to_dict()
    encoding = spec["layer"][1]["encoding"]
    assert encoding["shape"]["scale"]["domain"] == encoding["color"]["scale"]["domain"]


def test_switching_model_reuses_the_map(demo_run, monkeypatch) -> None:
    from pipeline.reports import inputs, sections

    run = Run.open(demo_run.run_name, demo_run.runs_dir)
    calls: list[int] = []
    real = inputs.tsne_coordinates
    monkeypatch.setattr(
        inputs, "tsne_coordinates", lambda x, seed: calls.append(len(x)) or real(x, seed)
    )
    seed = 7  # no other test maps with it: the first map computes its t-SNE
    source = inputs.MapSource.read(run)
    maps = [
        sections.tsne_section(source, run.reviews, run.evaluated(model)[0], 300, seed)[0]
        for model in ("tfidf_lr", "head_cls")
    ]
    assert len(calls) == 1  # one t-SNE, two models' maps
    where = ["review_id", "x", "y"]
    pd.testing.assert_frame_equal(maps[0][where], maps[1][where])
    assert maps[0]["pred_star"].notna().any()
    # another process (the app's server after the reports stage) reads the kept coordinates
    fresh = Run.open(demo_run.run_name, demo_run.runs_dir)
    fresh_source = inputs.MapSource.read(fresh)
    again = sections.tsne_section(
        fresh_source, fresh.reviews, fresh.evaluated("head_reg")[0], 300, seed
    )
    assert len(calls) == 1
    pd.testing.assert_frame_equal(again[0][where], maps[0][where])


def test_the_films_top_words_are_kept_for_the_next_process(demo_run, monkeypatch) -> None:
    from pipeline.reports import corpus

    first = Run.open(demo_run.run_name, demo_run.runs_dir)
    words = corpus.corpus_top_words(first)
    assert set(words) == set(first.films["film"])
    assert all(len(t) and (t["count"] >= corpus.MIN_WORD_COUNT).all() for t in words.values())
    assert (first.kept.analytics_dir(None) / "film-top-words" / "manifest.json").is_file()

    def no_tfidf(*args: object) -> None:
        raise AssertionError("the kept top words are read, not computed again")

    monkeypatch.setattr(corpus, "top_words_by_film", no_tfidf)
    again = corpus.corpus_top_words(Run.open(demo_run.run_name, demo_run.runs_dir))
    for film, table in words.items():
        pd.testing.assert_frame_equal(again[film], table)


def _without_weights(clause: dict) -> dict:
    return clause | {"attention_words": [w[:3] for w in clause.get("attention_words", [])]}


def test_the_aspects_section_matches_the_app(demo_run) -> None:
    """The report's aspects are film_aspects' and telling_clauses' (what the app's tab shows),
    every telling clause with its aspect words highlighted."""
    from pipeline import aspect_table, film_aspects, highlight_html, telling_clauses, words_html
    from pipeline.reports.render import render_film

    run = Run.open(demo_run.run_name, demo_run.runs_dir)
    film = run.films["film"].iloc[0]
    report = film_report(run, film)
    expected = film_aspects(run, film)
    pd.testing.assert_frame_equal(report.aspects.reset_index(drop=True), expected)
    page = render_film(report)
    assert 'id="aspects"' in page
    for row in aspect_table(expected).itertuples():
        assert html.escape(f"{row.name} {row.english}") in page
    for aspect in expected["aspect"]:
        told = telling_clauses(run, film, aspect)
        kept = report.aspect_clauses[aspect]
        for side in ("praise", "complaint"):  # the same clauses; attention in one batch or two
            assert [_without_weights(c) for c in kept[side]] == [
                _without_weights(c) for c in told[side]]  # fmt: skip
            weights = [[w[3] for w in c.get("attention_words", [])] for c in kept[side]]
            again = [[w[3] for w in c.get("attention_words", [])] for c in told[side]]
            assert [pytest.approx(w, abs=1e-6) for w in weights] == again
        for clause in kept["praise"] + kept["complaint"]:
            marked = words_html(clause["clause"], clause["words"])
            assert marked in page and 'class="att"' in marked
            # which words carried it: the run's head reading the clause alone
            assert clause["attention_model"] == run.attention_model(run.default_model)
            assert highlight_html(clause["attention_text"], clause["attention_words"]) in page
