"""What every page shares: which run and model are shown, cached loaders and the sidebar.

The app is a thin layer: numbers come from ``pipeline.analytics`` and scores from
``pipeline.predict.scorer``. Runs are opened once per process (``st.cache_resource``: a
``RunData`` is large, read-only and memoises its own parquet reads), derived tables are cached per
run and arguments (``st.cache_data``), so switching pages reloads neither data nor models.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import streamlit as st

from pipeline.config import DEMO_RUN, PROJECT_ROOT, RunPaths, latest_run

RUN_ENV = "DOUBAN_RUN"  # set by `douban app --run X`
RUNS_DIR_ENV = "DOUBAN_RUNS_DIR"  # set by `douban app --runs-dir D` and by the tests
RUN_PARAM = "run"  # ?run=X in the URL picks the run too, and records the sidebar's choice

# The theme font (.streamlit/config.toml) already falls back to Noto Sans CJK SC; attention
# highlights and Vega tooltips are drawn outside it, so they get the same stack here. (Styling
# every element would also override the icon font that draws Streamlit's material icons.)
CJK_FONT_STACK = "'Source Sans', 'Noto Sans CJK SC', 'Noto Sans SC', 'Microsoft YaHei', sans-serif"
CSS = f"""
<style>
  .attention, #vg-tooltip-element {{ font-family: {CJK_FONT_STACK}; }}
  .attention {{ line-height: 2.0; font-size: 1.05rem; }}
  .attention span {{ border-radius: 3px; padding: 1px 0; }}
</style>
"""


def runs_dir() -> Path:
    """Where runs live: ``$DOUBAN_RUNS_DIR``, else the project's runs/."""
    return Path(os.environ.get(RUNS_DIR_ENV) or PROJECT_ROOT / "runs")


def available_runs(root: Path) -> list[str]:
    """Runs with prepared data, newest first."""
    runs = [p for p in root.glob("*") if RunPaths(p).summary.exists()]
    runs.sort(key=lambda p: RunPaths(p).summary.stat().st_mtime, reverse=True)
    return [p.name for p in runs]


def default_run(root: Path) -> str | None:
    """The run asked for (URL, then environment), else the latest run, else the demo run."""
    runs = available_runs(root)
    for asked in (st.query_params.get(RUN_PARAM), os.environ.get(RUN_ENV)):
        if asked and asked in runs:
            return asked
    latest = latest_run(root)
    if latest is not None:
        return latest.name
    return DEMO_RUN if DEMO_RUN in runs else None


def _stamp(paths: RunPaths) -> tuple[float, ...]:
    """Modification times of the artifacts a page reads: a re-run stage invalidates the caches."""
    files = (
        paths.summary,
        paths.reviews,
        paths.metrics,
        paths.predictions,
        paths.features / "manifest.json",
        paths.lab,
        paths.models,
    )
    return tuple(f.stat().st_mtime if f.exists() else 0.0 for f in files)


@st.cache_resource(show_spinner="Opening run…", max_entries=4)
def _open_run(run_dir: str, stamp: tuple[float, ...]) -> Any:
    from pipeline.analytics import load_run

    return load_run(Path(run_dir))


@dataclass(frozen=True)
class Context:
    """The run (and model) every page shows."""

    run_dir: Path
    key: str  # identifies the run's current artifacts; part of every cache key
    data: Any  # pipeline.analytics.RunData
    model: str | None  # model whose predictions the pages show; None before training

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.run_dir)

    @property
    def name(self) -> str:
        return self.run_dir.name


def open_context(run_dir: Path) -> Context:
    """The run's data, from the process-wide cache unless an artifact changed on disk."""
    stamp = _stamp(RunPaths(run_dir))
    data = _open_run(str(run_dir), stamp)
    return Context(run_dir=run_dir, key=f"{run_dir}@{stamp}", data=data, model=None)


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_call(
    name: str, key: str, args: tuple, kwargs: dict, _func: Callable, _data: Any
) -> Any:
    return _func(_data, *args, **kwargs)


def cached(func: Callable[..., Any], ctx: Context, *args: Any, **kwargs: Any) -> Any:
    """``func(run_data, *args, **kwargs)`` computed once per run artifacts and arguments."""
    # page scripts all run as __main__: the file tells their functions apart
    name = f"{func.__code__.co_filename}:{func.__qualname__}"
    return _cached_call(name, ctx.key, args, kwargs, func, ctx.data)


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def load_scorer(run_dir: str, model: str | None, stamp: tuple[float, ...]) -> Any:
    from pipeline.predict.scorer import Scorer

    return Scorer.load(Path(run_dir), model=model)


def scorer_for(ctx: Context, model: str | None) -> Any:
    return load_scorer(str(ctx.run_dir), model, _stamp(ctx.paths))


def model_choices(data: Any) -> list[str]:
    """Models with predictions in the run, best first (exact accuracy on test)."""
    models, best = list(data.models), data.best_model()
    if best in models:
        models.remove(best)
        models.insert(0, best)
    return models


def sidebar() -> Context | None:
    """Run picker, model picker and the demo badge; None when there is no run to show."""
    root = runs_dir()
    runs = available_runs(root)
    st.sidebar.title("豆瓣 Douban sentiment")
    if not runs:
        return None
    default = default_run(root)
    run = st.sidebar.selectbox(
        "Run",
        runs,
        index=runs.index(default) if default in runs else 0,
        key="run",
        help=f"Runs with prepared data in {root}",
    )
    if st.query_params.get(RUN_PARAM) != run:
        st.query_params[RUN_PARAM] = run
    ctx = open_context(root / run)
    if ctx.data.is_demo:
        st.sidebar.warning(
            "**generated demo data**: the reviews are synthetic, so the numbers show how the "
            "pipeline works, not what Douban users think.",
            icon=":material/science:",
        )
    models = model_choices(ctx.data)
    model = None
    if models:
        model = st.sidebar.selectbox(
            "Model",
            models,
            key=f"model:{run}",
            help="Whose predictions the pages show and which model scores reviews; best first.",
        )
    else:
        st.sidebar.caption(f"No trained model yet: `douban train --run {run}`")
    return replace(ctx, model=model)


def current() -> Context:
    """The context the entry script put in session state; stops the page when there is none."""
    ctx = st.session_state.get("_context")
    if ctx is None:
        no_runs_message()
        st.stop()
    return ctx


def no_runs_message() -> None:
    st.info(
        f"No run with prepared data in `{runs_dir()}`. Make one, e.g.\n\n"
        "```\ndouban prepare --input data.csv --run myrun\n"
        "douban features --run myrun\ndouban train --run myrun\n```\n"
        "then reload this page."
    )


def needs(what: str, command: str) -> None:
    """Say what a page section needs and how to make it, instead of failing."""
    st.info(f"{what} — run `{command}`.", icon=":material/info:")


def film_label(row: Any) -> str:
    """``中文名 (English name)`` for a film row of ``RunData.films``."""
    cn, en, film = getattr(row, "film_cn", None), getattr(row, "film_en", None), row.film
    if isinstance(cn, str) and isinstance(en, str) and cn and en and cn != en:
        return f"{cn} ({en})"
    return str(film)
