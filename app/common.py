"""What every page shares: which run and model are shown, cached loaders and the sidebar.

The app is a thin layer over the public API (``import pipeline``): numbers come from a
``pipeline.Run`` and its cached analytics artifacts (``pipeline.film_report``), scores from
``run.scorer()``. Runs are opened once per process (``st.cache_resource``: a ``Run`` is large,
read-only and memoises its own parquet reads) and keyed by their artifacts' modification times,
so a re-run stage invalidates them; derived tables are cached per run and arguments
(``st.cache_data``), shared by every browser session.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import streamlit as st

import pipeline
from pipeline import DoubanError, Run

RUN_ENV = "DOUBAN_RUN"  # set by `douban app --run X`
RUN_PARAM = "run"  # ?run=X in the URL picks the run too, and records the sidebar's choice
FAVICON = Path(__file__).parent / "static" / "favicon.png"  # local: no icon font from the web

# The theme font (.streamlit/config.toml) already falls back to Noto Sans CJK SC; attention
# highlights and Vega tooltips are drawn outside it, so they get the same stack here. (Styling
# every element would also override the icon font that draws Streamlit's material icons.)
CJK_FONT_STACK = "'Source Sans', 'Noto Sans CJK SC', 'Noto Sans SC', 'Microsoft YaHei', sans-serif"
CSS = f"""
<style>
  .attention, #vg-tooltip-element {{ font-family: {CJK_FONT_STACK}; }}
  .attention {{ line-height: 2.0; font-size: 1.05rem; }}
  .attention span {{ border-radius: 3px; padding: 1px 0; }}
  .brand {{ font-size: 1.25rem; font-weight: 700; margin: 0 0 .5rem; }}
</style>
"""


_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
# GFM turns bare URLs, www. names and e-mail addresses into links after escapes are resolved; a
# zero-width space after their trigger keeps them text (and looks the same)
_AUTOLINK = re.compile(r"(?i)(://|www\.|@)")


def plain(text: object) -> str:
    """``text`` made inert for Streamlit's Markdown (st.info, st.caption, labels...): every ASCII
    punctuation mark gets a backslash and bare URLs are broken, so user text (reviews, film and
    run names, file names) shows as typed and never becomes a link, image, colour or icon. Text
    that may be long or is the point of the message goes to ``st.text`` instead."""
    defused = _AUTOLINK.sub(lambda m: m.group(1)[0] + "\u200b" + m.group(1)[1:], str(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", defused)


def runs_dir() -> Path:
    """Where runs live: ``$DOUBAN_RUNS_DIR`` (set by `douban app --runs-dir D`), else the
    project's default: the pipeline's one rule."""
    return pipeline.default_runs_dir()


def _open(root: Path, name: str) -> Run | None:
    try:
        return Run.open(root / name)
    except DoubanError:  # a folder whose name is not a run name, or vanished meanwhile
        return None


def available_runs(root: Path, asked: str | None = None) -> list[str]:
    """Runs with trained models, most recently trained first; ``asked`` (from the URL or
    ``douban app --run``) is listed too when it exists without models yet."""
    runs = [r for r in (_open(root, n) for n in pipeline.run_names(root)) if r is not None]
    trained = [r for r in runs if r.saved_models]
    trained.sort(key=lambda r: r.paths.models.stat().st_mtime, reverse=True)
    names = [r.name for r in trained]
    if asked and asked not in names and any(r.name == asked for r in runs):
        names.append(asked)
    return names


def asked_run() -> str | None:
    """The run named in the URL (``?run=``), else by ``douban app --run``."""
    return st.query_params.get(RUN_PARAM) or os.environ.get(RUN_ENV) or None


def _stamp(run: Run) -> tuple[str | float, ...]:
    """The current model generation and the modification times of the artifacts a page reads:
    a re-run stage invalidates the caches."""
    paths = run.paths
    files = (
        paths.summary,
        paths.reviews,
        paths.metrics,
        paths.predictions,
        paths.features / "manifest.json",
        paths.lab,
        paths.models,
    )
    times = tuple(f.stat().st_mtime if f.exists() else 0.0 for f in files)
    return (str(paths.model_set.root), *times)


@st.cache_resource(show_spinner="Opening run…", max_entries=4)
def _open_run(run_dir: str, stamp: tuple[str | float, ...]) -> Run:
    return Run.open(Path(run_dir))


@dataclass(frozen=True)
class Context:
    """The run (and model) every page shows."""

    key: str  # identifies the run's current artifacts; part of every cache key
    data: Run
    model: str | None  # model whose outputs the pages show; None before training

    @property
    def name(self) -> str:
        return self.data.name


def open_context(run_dir: Path) -> Context:
    """The run's data, from the process-wide cache unless an artifact changed on disk."""
    stamp = _stamp(Run.open(run_dir))
    data = _open_run(str(run_dir), stamp)
    return Context(key=f"{run_dir}@{stamp}", data=data, model=None)


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_call(
    name: str, key: str, args: tuple, kwargs: dict, _func: Callable, _data: Any
) -> Any:
    return _func(_data, *args, **kwargs)


def cached(func: Callable[..., Any], ctx: Context, *args: Any, **kwargs: Any) -> Any:
    """``func(run, *args, **kwargs)`` computed once per run artifacts and arguments, for every
    browser session."""
    # page scripts all run as __main__: the file tells their functions apart
    name = f"{func.__code__.co_filename}:{func.__qualname__}"
    return _cached_call(name, ctx.key, args, kwargs, func, ctx.data)


def scorer_for(ctx: Context) -> Any:
    """The scorer of the sidebar's model: the Run's own (``Run.scorer``), loaded once per run
    and model for every session, since the Run is. The models of a run share one encoder
    session, so switching model loads only the small model."""
    if ctx.model in ctx.data.loaded_scorers():
        return ctx.data.scorer(ctx.model)
    with st.spinner("Loading model…"):
        return ctx.data.scorer(ctx.model)


def model_choices(run: Run) -> list[str]:
    """Models of the run, the run's default (chosen on validation) first."""
    models, best = list(run.models), run.default_model
    if best in models:
        models.remove(best)
        models.insert(0, best)
    return models


def selection_metric(run: Run) -> str:
    """What the run's default model was chosen by (the evaluate stage's ``select_by``)."""
    chosen = (run.metrics.get("default_model") or {}).get("metric", "exact")
    return "QWK" if chosen == "qwk" else "exact accuracy"


def model_label(model: str | None) -> str:
    """``Display name (id)`` for captions and pickers."""
    return f"{pipeline.model_name(model)} ({model})" if model else "-"


def sidebar() -> Context | None:
    """Run picker, model picker and the demo badge; None when there is no run to show. The
    brand line is not a heading, so each page's title is its first <h1>."""
    root = runs_dir()
    asked = asked_run()
    runs = available_runs(root, asked)
    st.sidebar.html('<p class="brand">豆瓣 Douban sentiment studio</p>')
    if not runs:
        return None
    if asked and asked not in runs:  # a mistyped ?run= or --run: say so, do not swap silently
        st.warning(
            plain(f"There is no run named {asked[:80]} with trained models in {root}; "
                  f"showing {runs[0]} instead. Runs here: {', '.join(runs)}."),
            icon=":material/warning:",
        )  # fmt: skip
    run = st.sidebar.selectbox(
        "Run",
        runs,
        index=runs.index(asked) if asked in runs else 0,
        key="run",
        help=f"Runs with trained models in {root}",
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
            format_func=pipeline.model_name,  # the id goes below: a narrow sidebar cuts labels
            help="Whose predictions every page shows and which model scores reviews. The "
            f"first is the run's default, chosen on validation {selection_metric(ctx.data)}.",
        )
        default = " · the run's default" if model == ctx.data.default_model else ""
        st.sidebar.caption(f"model id `{model}`{default}")
    else:
        st.sidebar.caption("No trained model yet:")
        st.sidebar.code(pipeline.douban_command("train", run), language=None)
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
        plain(f"No run with trained models in {runs_dir()}. Make one, e.g."), icon=":material/info:"
    )
    st.code(
        "douban demo\n# or your own reviews:\ndouban prepare --input data.csv --run myrun\n"
        "douban features --run myrun\ndouban train --run myrun",
        language="bash",
    )


def needs(what: str, command: str) -> None:
    """Say what a page section needs and how to make it, instead of failing. ``what`` is plain
    text (it may hold a run's name): never Markdown."""
    st.info(plain(what), icon=":material/info:")
    st.code(command, language="bash")


def table(frame: Any, **kwargs: Any) -> None:
    """A table with human headers and model names, formatted numbers that still sort, and "-"
    for missing values."""
    styled = pipeline.styled_table(frame)
    columns = [str(c) for c in styled.data.columns]
    config: dict[str, Any] = {
        name: st.column_config.Column(help=text)
        for name, text in pipeline.column_help(columns).items()
    }
    for name in {"Model", "Film"} & set(columns):  # stays in view when a wide table scrolls
        config[name] = st.column_config.Column(pinned=True)
    st.dataframe(styled, hide_index=True, placeholder="-", column_config=config, **kwargs)


def film_label(row: Any) -> str:
    """``中文名 (English name)`` for a film row of ``Run.films``."""
    cn, en, film = getattr(row, "film_cn", None), getattr(row, "film_en", None), row.film
    if isinstance(cn, str) and isinstance(en, str) and cn and en and cn != en:
        return f"{cn} ({en})"
    return str(film)
