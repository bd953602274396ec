"""End to end in a real browser: `douban app` serves the demo run on a free local port, headless
Chromium opens every page, scores a review, hovers the t-SNE map, and saves a screenshot per page
(kept in the test's tmp dir and copied to /tmp/app_screens/ for a person to look at)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SCREENS = Path("/tmp/app_screens")
PAGES = {"overview": "", "films": "films", "score": "score", "reports": "reports", "lab": "lab"}
VIEWPORT = {"width": 1400, "height": 1000}
BOOT_TIMEOUT = 120
RUN_TIMEOUT_MS = 240_000  # a page's first run reads the run, builds a film, loads the encoder

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app did not answer on {url} within {BOOT_TIMEOUT}s")


@pytest.fixture(scope="module")
def app_url(demo_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`douban app --run <demo> --headless` on a free port; stopped with its process group."""
    run_dir = demo_run.paths.root
    port = free_port()
    env = dict(os.environ, DOUBAN_REPORTS_DIR=str(tmp_path_factory.mktemp("reports")))
    log = (tmp_path_factory.mktemp("server") / "app.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "app",
            "--run",
            run_dir.name,
            "--runs-dir",
            str(run_dir.parent),
            "--port",
            str(port),
            "--headless",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def page(app_url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
            ],
        )
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(RUN_TIMEOUT_MS)
        yield page
        browser.close()


def settle(page) -> None:
    """Wait until the script run is over: the app is drawn and the running indicator gone."""
    page.wait_for_timeout(500)  # a click's rerun may not have started yet
    page.wait_for_selector('[data-testid="stMain"]', timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')"
        "?.getAttribute('data-test-script-state') === 'notRunning'",
        timeout=RUN_TIMEOUT_MS,
    )
    page.wait_for_timeout(1500)  # charts and images finish drawing


def shoot(page, name: str, tmp_path: Path) -> Path:
    """A screenshot of the whole page. Streamlit scrolls inside its main block, not the
    document, so the window is made as tall as that block first (up to 8000 px)."""
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, 1000), 8000)})
    page.wait_for_timeout(1500)  # charts redraw at the new size
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    return keep(path)


def keep(path: Path) -> Path:
    """Copy a screenshot to /tmp/app_screens/ for a person to look at."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / path.name)
    return path


def open_page(page, app_url: str, name: str) -> None:
    page.goto(f"{app_url}/{PAGES[name]}")
    settle(page)
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_opens_without_an_error(page, app_url: str, name: str, tmp_path: Path) -> None:
    open_page(page, app_url, name)
    assert page.locator("h1").first.inner_text().strip()
    assert page.get_by_text("generated demo data").count() >= 1  # the demo badge, every page
    shoot(page, name, tmp_path)


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
    path = tmp_path / "films_map_tooltip.png"
    page.screenshot(path=str(path))  # the window as it is, tooltip included
    keep(path)
