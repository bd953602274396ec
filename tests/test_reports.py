"""HTML reports: every section present, self-contained, review text escaped, and a page that a
real browser draws (headless Chromium, skipped where it is not installed)."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.analytics import FilmNotFoundError, load_run
from pipeline.config import Settings
from pipeline.reports.pages import SECTIONS, FilmReport, film_file_names, write_reports
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

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href") and value is not None:
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def assert_self_contained(page: PageParser) -> None:
    external = [u for u in page.urls if u.startswith(("http:", "https:", "//"))]
    assert not external, external
    assert "script" not in page.tags and "link" not in page.tags


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
    images = [u for u in parse(iron_man).urls if u.startswith("data:image/png;base64,")]
    assert len(images) >= 6  # distribution, confusion, 2 cloud images, trend, league


def test_review_text_is_escaped(synthetic_pages: list[Path]) -> None:
    raw = synthetic_pages[0].read_text(encoding="utf-8")
    page = parse(synthetic_pages[0])
    assert "<script>" not in raw and "<img src=x" not in raw
    assert "&lt;script&gt;" in raw
    assert SCRIPT_REVIEW in "".join(page.text)  # shown to the reader as the text it is


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
    run = load_run(make_run(tmp_path / "synthetic"))
    report = FilmReport.build(run, "My Sunshine", model="majority", tsne_cap=50)
    assert report.film == "何以笙箫默" and report.model == "majority"
    test = run.predictions.query("model == 'majority' and split == 'test' and film == '何以笙箫默'")
    assert report.summary["n"] == len(test)
    assert report.summary["mean_pred"] == 4.0
    assert report.distribution["predicted"].tolist() == [0, 0, 0, len(test), 0]
    assert report.confusion_counts.to_numpy().sum() == len(test)
    assert report.league["film"].nunique() == 3
    with pytest.raises(FilmNotFoundError, match="钢铁侠1"):
        FilmReport.build(run, "Titanic")
    with pytest.raises(ValueError, match="no predictions of model"):
        FilmReport.build(run, "钢铁侠1", model="bert_xl")
    with pytest.raises(ValueError, match="--all"):
        write_reports(tmp_path / "synthetic")


def test_film_file_names_are_safe_and_unique() -> None:
    names = film_file_names(["冰川时代5：星际碰撞", "a/b", "a?b", "../x"])
    assert names["冰川时代5：星际碰撞"] == "冰川时代5_星际碰撞.html"
    assert len(set(names.values())) == 4
    assert all("/" not in n and not n.startswith(".") for n in names.values())


@pytest.fixture(scope="module")
def demo_pages(demo_run: Settings, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    run = load_run(demo_run.paths.root)
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
def test_demo_report_renders_in_a_browser(demo_pages: list[Path], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    shot = tmp_path / "page.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,3000", demo_pages[0].as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 20  # text, figures and tables, not a blank page
    top = pixels[:600]
    assert (top < 100).mean() > 0.005  # the heading and key numbers are drawn in dark ink


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
