"""Finding a run by name: the one place that turns a user's run name into a run directory.

It sits beside :mod:`pipeline.config` (below every stage and the scorer) so that
``Scorer.load("demo")``, ``Run.open("demo")`` and the CLI resolve names the same way and say the
same thing when a run is missing.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import RunPaths, check_run_name, default_runs_dir, latest_run
from pipeline.errors import RunNotFoundError, StageMissingError

_MODEL_CONFIG = "config.json"  # a saved model's directory holds one (pipeline.modeling.bundle)


def has_models(paths: RunPaths) -> bool:
    """Whether the run holds at least one saved model."""
    models = paths.models
    return models.is_dir() and any((p / _MODEL_CONFIG).exists() for p in models.iterdir())


def run_names(runs_dir: Path) -> list[str]:
    """Runs under ``runs_dir`` (directories with prepared data or models), sorted."""
    if not runs_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in runs_dir.iterdir()
        if p.is_dir() and (RunPaths(p).summary.exists() or has_models(RunPaths(p)))
    )


def locate_run(name: str, runs_dir: Path | None = None) -> RunPaths:
    """The paths of run ``name`` under ``runs_dir``; a clear error when it does not exist."""
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    root = runs_dir / check_run_name(name)
    if not root.is_dir():
        existing = run_names(runs_dir)
        raise RunNotFoundError(
            f"run {name!r} does not exist in {runs_dir}; runs there: {', '.join(existing) or '-'}",
            hint="pick one of those with --run, or point --runs-dir at another folder",
        )
    return RunPaths(root)


def newest_trained_run(runs_dir: Path | None = None) -> RunPaths:
    """The latest prepared run (``config.latest_run``) if it has models, else the newest run
    that does."""
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    latest = latest_run(runs_dir) if runs_dir.is_dir() else None
    if latest is not None and has_models(RunPaths(latest)):
        return RunPaths(latest)
    trained = [RunPaths(runs_dir / n) for n in run_names(runs_dir)]
    trained = [p for p in trained if has_models(p)]
    if not trained:
        raise StageMissingError(
            f"no run with trained models in {runs_dir}",
            hint="make one with `douban demo`, or `douban prepare`, `douban features` and "
            "`douban train --run NAME`",
        )
    return max(trained, key=lambda p: p.models.stat().st_mtime)


def resolve_run(run: str | Path | RunPaths | None, runs_dir: Path | None = None) -> RunPaths:
    """A run name (under ``runs_dir``), a run directory (a Path, or a string with a separator
    that names one), or None (the newest trained run)."""
    if isinstance(run, RunPaths):
        return run
    if run is None:
        return newest_trained_run(runs_dir)
    if isinstance(run, str) and ("/" in run or "\\" in run) and Path(run).is_dir():
        run = Path(run)
    if isinstance(run, Path):
        return locate_run(run.name, run.parent)
    return locate_run(run, runs_dir)
