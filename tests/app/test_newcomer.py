"""The newcomer's path, in a real browser (issue 22): the demo, then `douban run -i my.csv` with no
--run, then the app. The demo stays as it was, the new run is its own (named after the file), and
the app shows both, each with its own numbers. Also: the service's /docs renders with every
request outside localhost blocked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
from browser import (
    CHROMIUM,
    LAUNCH_ARGS,
    RUN_TIMEOUT_MS,
    no_exception,
    serving,
    settle,
)

from pipeline.data.aspects import ASPECTS
from pipeline.data.demo import generate_demo_corpus

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]
# a quicker `douban run` than the defaults; nothing in it names a run
FAST = """
[prepare]
workers = 1
[features]
max_length = 64
[head]
epochs = 3
patience = 2
hops = 2
[finetune]
in_run = false
"""


def digest(folder: Path) -> str:
    """One hash of every file under ``folder`` (names and bytes)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@contextmanager
def offline_page() -> Iterator:
    """A Chromium page whose requests outside localhost are aborted (and recorded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(RUN_TIMEOUT_MS)
        page.outside = []

        def route(r) -> None:
            if urlparse(r.request.url).hostname in ("127.0.0.1", "localhost"):
                r.continue_()
            else:
                page.outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        yield page
        browser.close()


def douban(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *map(str, args)]


def test_from_the_demo_to_my_own_reviews(demo_run, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(demo_run.paths.root, runs / "demo")
    before = digest(runs / "demo" / "prepared"), digest(runs / "demo" / "trained")
    mine = generate_demo_corpus(tmp_path / "my.csv", n_reviews=240, seed=11)
    config = tmp_path / "fast.toml"
    config.write_text(FAST)
    env = dict(os.environ, DOUBAN_REPORTS_DIR=str(tmp_path / "reports"))
    done = subprocess.run(
        douban("run", "-i", mine, "--runs-dir", runs, "--config", config),  # no --run
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run my (named after my.csv" in done.stderr
    assert (digest(runs / "demo" / "prepared"), digest(runs / "demo" / "trained")) == before
    kept = json.loads((runs / "my" / "prepared" / "summary.json").read_text())["kept"]
    demo_kept = json.loads((runs / "demo" / "prepared" / "summary.json").read_text())["kept"]
    assert kept != demo_kept  # the two runs' numbers can be told apart

    app = douban("app", "--runs-dir", runs, "--headless")  # no --run: the newest trained run
    with serving(app, "/_stcore/health", tmp_path / "app.log", env) as url, offline_page() as page:
        page.goto(url)
        settle(page)
        no_exception(page)
        assert page.locator("h1").first.inner_text().strip() == "Overview"
        main = page.locator('[data-testid="stMain"]')
        assert "Run my" in main.inner_text()
        assert f"{kept:,}" in main.locator('[data-testid="stMetric"]').nth(1).inner_text()
        assert page.get_by_text("generated demo data").count() == 0  # my.csv is no demo file

        page.locator('[data-testid="stSidebar"]').get_by_label("Run", exact=True).click()
        options = page.get_by_role("option")
        assert sorted(options.all_inner_texts()) == ["demo", "my"]
        options.filter(has_text="demo").click()
        settle(page)
        no_exception(page)
        assert "Run demo" in main.inner_text()
        assert f"{demo_kept:,}" in main.locator('[data-testid="stMetric"]').nth(1).inner_text()
        assert page.get_by_text("generated demo data").count() >= 1
        assert not page.outside, page.outside


def test_the_api_docs_render_offline(demo_run, tmp_path: Path) -> None:
    serve = douban("serve", "--run", demo_run.run_name, "--runs-dir", demo_run.runs_dir)
    log = tmp_path / "serve.log"
    with serving(serve, "/healthz", log, dict(os.environ)) as url, offline_page() as page:
        page.goto(f"{url}/docs")
        page.locator(".swagger-ui .opblock").first.wait_for()
        assert page.locator(".swagger-ui .opblock").count() >= 3  # score, models, health
        assert "/v1/score" in page.locator(".swagger-ui").inner_text()
        page.goto(f"{url}/redoc")
        page.get_by_text("/v1/score").first.wait_for()
        assert not page.outside, page.outside


@pytest.mark.real_data
def test_the_aspects_tab_on_real_reviews(shared_data: Path, tmp_path: Path) -> None:
    """A run of real reviews (text models only: no features needed): the Aspects tab draws
    the film's aspects, and choosing an aspect shows its clauses with the aspect's words lit."""
    import pandas as pd

    rows = pd.read_csv(shared_data / "douban_2016_4films.csv").sample(1500, random_state=0)
    rows.to_csv(tmp_path / "real.csv", index=False)
    runs, env = tmp_path / "runs", dict(os.environ)
    for stage in (["prepare", "-i", tmp_path / "real.csv"], ["train"]):
        done = subprocess.run(douban(*stage, "--run", "real", "--runs-dir", runs),
                              capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    app = douban("app", "--run", "real", "--runs-dir", runs, "--headless")
    with serving(app, "/_stcore/health", tmp_path / "app.log", env) as url, offline_page() as page:
        page.goto(f"{url}/films")
        settle(page)
        page.get_by_role("tab", name="Aspects", exact=True).click()
        settle(page)
        no_exception(page)
        main = page.locator('[data-testid="stMain"]')
        assert main.locator('[data-testid="stVegaLiteChart"]').count() >= 1
        assert "plot & story" in main.inner_text()
        main.get_by_label("Read the clauses on").click()
        page.keyboard.type("plot")  # the picker filters its options as one types
        page.keyboard.press("Enter")
        settle(page)
        no_exception(page)
        lit = set(main.locator(".attention span.att").all_inner_texts())  # the aspect's words
        assert lit & set(ASPECTS["plot"][2]), lit
        assert not page.outside, page.outside
