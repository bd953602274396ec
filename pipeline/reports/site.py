"""The reports site of a run: safe file names per film, and writing every page (with the
index) atomically under ``reports/<run>/``, skipped when its fingerprint is unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from pipeline.analytics.embedding import DEFAULT_CAP
from pipeline.artifacts import write_text
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.reports.corpus import corpus_numbers
from pipeline.reports.names import film_file_names
from pipeline.reports.render import render_film, render_index
from pipeline.reports.store import film_report
from pipeline.run import Run

log = logging.getLogger(__name__)


def _open_run(source: Settings | Path | str | Run) -> Run:
    """A run object for a Settings, a run directory, or an already opened run."""
    if isinstance(source, Settings):
        return Run.open(source.run_name, runs_dir=source.runs_dir)
    if isinstance(source, str | Path):
        path = Path(source)
        return Run.open(path.name, runs_dir=path.parent)
    return source


def write_reports(
    settings_or_run_dir: Settings | Path | str | Run,
    films: list[str] | None = None,
    all_films: bool = False,
    model: str | None = None,
    reports_dir: Path | None = None,
    tsne_cap: int = DEFAULT_CAP,
    progress: bool = True,
) -> list[Path]:
    """Write ``<reports_dir>/<run>/<film>.html`` for the chosen films (CN or EN names) or all of
    them, and ``index.html``. The run is given by its settings, its directory, or already opened
    (a run keeps what it read for the next call). ``reports_dir`` defaults to
    ``settings.reports_dir``. Returns the paths written, index last."""
    if not films and not all_films:
        raise InputError("name films to report on (--film) or ask for --all")
    settings = settings_or_run_dir if isinstance(settings_or_run_dir, Settings) else Settings()
    run = _open_run(settings_or_run_dir)
    base = reports_dir or settings.reports_dir
    seed = settings.seed
    model = run.resolve_model(model)
    wanted = list(run.films["film"]) if all_films else [run.resolve_film(f) for f in films or []]
    names = film_file_names(list(run.films["film"]))
    out_dir = Path(base) / run.name
    log.info("reports plan: %d film page(s) and the index of run %s by %s into %s, the run-wide "
             "numbers first", len(wanted), run.name, model, out_dir)  # fmt: skip
    corpus_numbers(run, model)
    written = []
    for film in tqdm(wanted, desc=f"reports {run.name}", unit="film", disable=not progress):
        report = film_report(run, film, model, tsne_cap=tsne_cap, seed=seed)
        path = out_dir / names[film]
        write_text(path, render_film(report))
        written.append(path)
    pages = {f: n for f, n in names.items() if (out_dir / n).exists()}
    index = out_dir / "index.html"
    write_text(index, render_index(run, model, pages, tsne_cap, seed))
    written.append(index)
    log.info("wrote %d report pages to %s", len(written), out_dir)
    return written
