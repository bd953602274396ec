"""End to end in a real browser: `douban app` serves (a copy of) the demo run, with the demo's
small lab, on a free local port; headless Chromium opens every page and every tab, scores a
review, hovers the t-SNE map, and fails on any console error, Streamlit exception or request that
leaves localhost. A screenshot per page and tab is saved in the test's tmp dir."""

from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.request
from collections.abc import Iterator
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

PAGES = {"overview": "", "films": "films", "score": "score", "reports": "reports", "lab": "lab"}
TITLES = {
    "overview": "Overview",
    "films": "Films",
    "score": "Score a review",
    "reports": "Reports",
    "lab": "Model lab",
}
TABS = {
    "films": ["Stars", "Map", "Words", "Aspects", "Attention", "Time & likes", "League"],
    "lab": ["Findings", "Probes", "Geometry", "Projections", "Word in context", "Attention heads"],
    "score": ["One review", "A file of reviews"],
}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# Opened at /films, Streamlit first looks for its server under /films/ (404), then at the root
BASE_PATH_PROBE = re.compile(r"^/[^/]+/_stcore/(health|host-config)$")
VIEWPORT = {"width": 1400, "height": 1000}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def demo_with_lab(demo_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's demo run (others test it without a lab) plus the demo's lab."""
    from pipeline.workflow import demo_lab

    runs = tmp_path_factory.mktemp("e2e") / "runs"
    shutil.copytree(demo_run.paths.root, runs / "demo")
    demo_lab(demo_run.model_copy(update={"runs_dir": runs}))
    return runs / "demo"


@pytest.fixture(scope="module")
def app_url(demo_with_lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`douban app --run demo --headless` on a free port; stopped with its process group."""
    env = dict(os.environ, DOUBAN_REPORTS_DIR=str(tmp_path_factory.mktemp("reports")))
    command = [sys.executable, "-m", "pipeline.cli", "app", "--run", demo_with_lab.name,
               "--runs-dir", str(demo_with_lab.parent), "--headless"]  # fmt: skip
    log = tmp_path_factory.mktemp("server") / "app.log"
    with serving(command, "/_stcore/health", log, env) as url:
        yield url


class Watch:
    """Console errors, page errors, failed responses and every request URL the browser made."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.requests: list[str] = []

    def problems(self) -> list[str]:
        """Every error but the 404s of Streamlit's base-path probe (and their console lines)."""
        failed = [u for u in self.failed if not BASE_PATH_PROBE.match(urlparse(u).path)]
        logged = [e for e in self.errors if not e.startswith("Failed to load resource")]
        return logged + failed

    def clear(self) -> None:
        self.errors.clear()
        self.failed.clear()

    def external(self) -> list[str]:
        return [
            u
            for u in self.requests
            if urlparse(u).scheme in ("http", "https", "ws", "wss")
            and urlparse(u).hostname not in LOCAL_HOSTS
        ]


@pytest.fixture(scope="module")
def browser_page(app_url: str):
    from playwright.sync_api import sync_playwright

    watch = Watch()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=LAUNCH_ARGS,
        )
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(RUN_TIMEOUT_MS)
        page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: watch.errors.append(str(e)))
        page.on("request", lambda r: watch.requests.append(r.url))
        page.on("response", lambda r: watch.failed.append(r.url) if r.status >= 400 else None)
        yield page, watch
        browser.close()


@pytest.fixture
def page(browser_page):
    """The shared page; a test fails on any console error or non-local request it caused."""
    page, watch = browser_page
    watch.clear()
    yield page
    assert not watch.problems(), watch.problems()
    assert not watch.external(), watch.external()


def shoot(page, name: str, tmp_path: Path) -> Path:
    """A screenshot of the whole page. Streamlit scrolls inside its main block, not the
    document, so the window is made as tall as that block first (up to 8000 px)."""
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, 1000), 8000)})
    page.wait_for_timeout(1500)  # charts redraw at the new size
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    return path


def open_page(page, app_url: str, name: str) -> None:
    page.goto(f"{app_url}/{PAGES[name]}")
    settle(page)
    no_exception(page)


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_and_tab_opens_without_an_error(
    page, app_url: str, name: str, tmp_path: Path
) -> None:
    open_page(page, app_url, name)
    assert page.locator("h1").first.inner_text().strip() == TITLES[name]  # the page's own title
    assert page.get_by_text("generated demo data").count() >= 1  # the demo badge, every page
    icon = page.locator('link[rel*="icon"]').first.get_attribute("href") or ""
    assert "/media/" in icon  # app/static/favicon.png, served by the app itself
    shoot(page, name, tmp_path)
    for tab in TABS.get(name, []):
        page.get_by_role("tab", name=tab, exact=True).click()
        settle(page)
        no_exception(page)
        assert page.get_by_text("This part was not computed").count() == 0, tab
        shoot(page, f"{name}_{tab.replace(' ', '_').replace('&', 'and')}", tmp_path)


def test_score_a_review_in_the_browser(page, app_url: str, tmp_path: Path) -> None:
    open_page(page, app_url, "score")
    page.get_by_role("textbox", name="Review", exact=True).fill(
        "剧情紧凑，演员演技在线，值得一看！"
    )
    page.get_by_role("button", name="Score", exact=True).click()
    settle(page)
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Predicted star")
    value = metric.locator('[data-testid="stMetricValue"]').inner_text()
    assert value.strip()[0] in "12345"
    assert page.locator("span.att").count() > 0  # attention highlights
    shoot(page, "score_result", tmp_path)


def test_crafted_film_link_shows_plain_text(page, app_url: str, tmp_path: Path) -> None:
    """?film= with Markdown for a link and an image: no link or image reaches the page."""
    payload = "[log in](http://evil.example/) ![x](http://evil.example/x.png)"
    page.goto(f"{app_url}/films?film={urllib.request.quote(payload)}")
    settle(page)
    no_exception(page)
    main = page.locator('[data-testid="stMain"]')
    assert main.locator('a[href^="http://evil"]').count() == 0
    assert main.locator('img[src^="http://evil"]').count() == 0
    assert payload in main.inner_text()
    shoot(page, "films_crafted_link", tmp_path)


def test_film_map_tooltip_shows_the_review(page, app_url: str, tmp_path: Path) -> None:
    open_page(page, app_url, "films")
    page.get_by_role("tab", name="Map").click()
    settle(page)
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    tooltip = page.locator("#vg-tooltip-element")
    found = False
    for fy in range(5, 100, 5):  # sweep the chart until the pointer lands on a point
        for fx in range(5, 100, 3):
            page.mouse.move(box["x"] + box["width"] * fx / 100, box["y"] + box["height"] * fy / 100)
            if tooltip.count() and "review" in (tooltip.first.inner_text() or ""):
                found = True
                break
        if found:
            break
    assert found, "no tooltip with the review text appeared over the t-SNE map"
    page.screenshot(path=str(tmp_path / "films_map_tooltip.png"))  # the window, tooltip included


def test_the_app_listens_on_localhost_only(app_url: str) -> None:
    """`douban app` binds 127.0.0.1 unless --host says otherwise."""
    import psutil

    port = urlparse(app_url).port
    listening = {
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }
    assert listening == {"127.0.0.1"}
