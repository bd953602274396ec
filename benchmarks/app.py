"""Page times of the Streamlit app in a real browser (headless Chromium via Playwright).

Starts `douban app` on a run, then times, from the click or navigation to the end of the script
run (Streamlit's script state back to notRunning and no spinner left):

- each page's first open on a fresh server (cold: reads the run, builds what is not cached yet),
  a second visit (warm), and a visit from a new browser session (warm server, cold browser);
- switching the sidebar's model on the Overview, then the Films page's first view with it;
- the Films page of the largest film, switching to the next film, each Films tab;
- switching the model on the Score page (loads the other model, rescores the shown review);
- writing one film's report from the Reports page.

    python benchmarks/app.py [--run demo] [--runs-dir runs] [--port 8765]

Goals (issues 14 and 22, dmsc_sample on a quiet machine): every page within 2 s warm, in the same
or a new browser session, the largest film within 5 s on first open, switching film or model
within 2 s (the first view with the new model included), one film's report within 20 s.
Writes benchmarks/results/app_<run>.json and prints a table; the load average is recorded with it,
since on a busy shared machine the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import Run, corpus_map, film_report, model_name  # noqa: E402
from pipeline.artifacts import write_json  # noqa: E402
from pipeline.config import default_runs_dir  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CHROMIUM = "/usr/bin/chromium"
PAGES = {"Overview": "", "Films": "films", "Score a review": "score", "Reports": "reports",
         "Model lab": "lab"}  # fmt: skip
FILM_TABS = ["Stars", "Map", "Words", "Aspects", "Attention", "Time & likes", "League"]
GOALS = {"page warm": 2.0, "largest film, first open": 5.0, "switch film": 2.0,
         "switch model": 2.0, "one film's report": 20.0}  # fmt: skip
TIMEOUT_MS = 600_000

console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(run: str, runs_dir: Path, port: int, reports: Path) -> subprocess.Popen:
    env = dict(os.environ, DOUBAN_REPORTS_DIR=str(reports))
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "app", "--run", run, "--runs-dir", str(runs_dir),
         "--port", str(port), "--headless"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGTERM)
    raise SystemExit("the app did not start within 120 s")


def settled(page) -> None:
    """The script run is over and nothing is still spinning."""
    page.wait_for_timeout(300)  # let a click's rerun start
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')"
        "?.getAttribute('data-test-script-state') === 'notRunning'"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')",
        timeout=TIMEOUT_MS,
    )


def new_page(browser):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def pick_model(page, model: str) -> None:
    """Choose ``model`` in the sidebar's picker and wait for the page to settle."""
    page.get_by_label("Model", exact=True).click()
    page.get_by_role("option", name=model_name(model), exact=True).click()
    settled(page)


def navigate(page, title: str) -> None:
    """Open a page from the sidebar's navigation: the same browser session, so the sidebar's
    choices hold (a new URL would start a new session with the defaults)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    settled(page)


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(browser, url: str, run: Run) -> list[dict]:
    rows: list[dict] = []
    page = new_page(browser)

    def add(what: str, seconds: float, goal: str | None = None) -> None:
        rows.append({"what": what, "seconds": round(seconds, 2), "goal": goal})
        console.print(f"{what}: {seconds:.1f} s")

    def visit(path: str) -> None:
        page.goto(f"{url}/{path}")
        settled(page)

    for name, path in PAGES.items():
        add(f"{name}: first open (cold server)", timed(lambda path=path: visit(path)))
    for name, path in PAGES.items():
        add(f"{name}: second visit", timed(lambda path=path: visit(path)), "page warm")
    fresh = new_page(browser)  # a new browser session: Streamlit boots its front end again
    for name, path in PAGES.items():

        def visit_fresh(path: str = path) -> None:
            fresh.goto(f"{url}/{path}")
            settled(fresh)

        add(f"{name}: new browser session", timed(visit_fresh), "page warm")
    fresh.context.close()

    others = [m for m in run.saved_models if m != run.default_model]
    if others:
        visit("")
        add(
            f"Overview: switch model to {others[0]}",
            timed(lambda: pick_model(page, others[0])),
            "switch model",
        )
        add(
            f"Films: first view with {others[0]}",
            timed(lambda: navigate(page, "Films")),
            "switch model",
        )
        add(
            f"Films: switch model back to {run.default_model}",
            timed(lambda: pick_model(page, run.default_model)),
            "switch model",
        )

    films = run.films["film"].tolist()  # most reviewed first: the app opens the largest
    page.goto(f"{url}/films")
    settled(page)
    for tab in FILM_TABS:
        tab_ = page.get_by_role("tab", name=tab, exact=True)
        add(f"Films: {tab} tab", timed(lambda tab_=tab_: (tab_.click(), settled(page))))
    if len(films) > 1:
        page.get_by_role("tab", name="Stars", exact=True).click()
        settled(page)

        def switch_film() -> None:
            page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').first.click()
            page.get_by_role("option").filter(has_text=films[1]).first.click()
            settled(page)

        add(f"switch film ({films[1]})", timed(switch_film), "switch film")
    page.goto(f"{url}/films?film={urllib.request.quote(films[0])}")
    settled(page)
    add(
        f"largest film ({films[0]}), reload",
        timed(lambda: (page.reload(), settled(page))),
        "largest film, first open",
    )

    visit("score")
    page.get_by_role("textbox", name="Review", exact=True).fill("剧情拖沓，浪费时间")
    page.get_by_role("button", name="Score", exact=True).click()
    settled(page)
    if others:
        add(
            f"Score: switch model to {others[0]} (rescore)",
            timed(lambda: pick_model(page, others[0])),
            "switch model",
        )

    visit("reports")
    page.locator('[data-testid="stMultiSelect"]').first.click()
    page.get_by_role("option").filter(has_text=films[0]).first.click()
    page.keyboard.press("Escape")
    settled(page)
    button = page.get_by_role("button", name="Generate", exact=True)
    add(
        f"one film's report ({films[0]})",
        timed(lambda: (button.click(), settled(page))),
        "one film's report",
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="demo")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: runs/")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    runs_dir = (args.runs_dir or default_runs_dir()).resolve()
    run = Run.open(args.run, runs_dir=runs_dir)
    start = time.perf_counter()
    for film in run.films["film"]:  # what the reports stage of `douban demo` / `douban run` keeps
        film_report(run, film)
    corpus_map(run)
    precompute_s = time.perf_counter() - start
    console.print(f"analytics of {len(run.films)} films ready in {precompute_s:.1f} s")
    port = args.port or free_port()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="app-bench-") as reports:
        server = start_app(run.name, runs_dir, port, Path(reports))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                rows = measure(browser, f"http://127.0.0.1:{port}", run)
                browser.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    for row in rows:
        row["met"] = None if row["goal"] is None else row["seconds"] <= GOALS[row["goal"]]
    result = {
        "run": run.name,
        "reviews": len(run.reviews),
        "films": len(run.films),
        "default_model": run.default_model,
        "analytics_precompute_s": round(precompute_s, 1),
        "goals_s": GOALS,
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_after": round(os.getloadavg()[0], 2),
        },
        "note": "wall seconds in headless Chromium from navigation or click to the end of the "
        "script run; cold = first open on a fresh server. The films' analytics are made first, "
        "as the reports stage of `douban demo` does (analytics_precompute_s; artifacts already "
        "up to date are read, not rebuilt)",
    }
    out = RESULTS / f"app_{run.name}.json"
    write_json(out, result)
    table = Table(title=f"app page times, run {run.name} ({len(run.reviews):,} reviews)")
    for col in ("what", "seconds", "goal s", "met"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for row in rows:
        goal = GOALS.get(row["goal"]) if row["goal"] else None
        met = "" if row["met"] is None else ("yes" if row["met"] else "no")
        table.add_row(row["what"], f"{row['seconds']:.1f}", f"{goal:.0f}" if goal else "", met)
    Console().print(table)
    console.print(f"wrote {out} (load average {load_before:.1f} before)")


if __name__ == "__main__":
    main()
