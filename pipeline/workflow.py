"""The whole journey in one call: prepare -> features -> train + evaluate -> reports.

`douban demo` runs it on the generated demo corpus (the README's main job); `douban run` on the
user's own CSVs. Each stage is cached by fingerprint, so a second call only redoes what changed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.config import Settings

log = logging.getLogger(__name__)


def run_pipeline(settings: Settings, inputs: list[Path], *, force: bool = False) -> list[Path]:
    """Run every stage for ``settings.run_name``; returns the report pages written."""
    from pipeline.features import extract_features
    from pipeline.modeling.train import train_run
    from pipeline.prepare import prepare_run
    from pipeline.reports import write_reports

    timings: dict[str, float] = {}

    def timed(stage: str, start: float) -> None:
        timings[stage] = time.perf_counter() - start
        log.info("%s done in %.1f s", stage, timings[stage])

    t = time.perf_counter()
    prepare_run(settings, inputs, force=force)
    timed("prepare", t)
    t = time.perf_counter()
    extract_features(settings, force=force)
    timed("features", t)
    t = time.perf_counter()
    train_run(settings)
    timed("train + evaluate", t)
    t = time.perf_counter()
    pages = write_reports(settings, all_films=True)
    timed("reports", t)
    log.info("pipeline finished: %s", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return pages


def run_demo(settings: Settings, n_reviews: int = 6000, *, force: bool = False) -> list[Path]:
    """Generate the demo corpus (deterministic, cached on disk) and run the pipeline on it."""
    from pipeline.demo import default_demo_path, generate_demo_corpus

    path = default_demo_path()
    if force or not path.exists():
        generate_demo_corpus(path, n_reviews=n_reviews, seed=settings.seed)
    return run_pipeline(settings, [path], force=force)
