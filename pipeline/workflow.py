"""The whole journey in one call: prepare -> features -> train + evaluate -> reports.

`douban demo` runs it on the generated demo corpus (the README's main job); `douban run` on the
user's own CSVs. Each stage is cached by fingerprint, so a second call only redoes what changed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Settings

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """The report pages written and how long each stage took (seconds)."""

    pages: list[Path]
    timings: dict[str, float] = field(default_factory=dict)


def run_pipeline(settings: Settings, inputs: list[Path], *, force: bool = False) -> PipelineResult:
    """Run every stage for ``settings.run_name``."""
    from pipeline.data.prepare import prepare_run
    from pipeline.features.extract import extract_features
    from pipeline.reports.pages import write_reports
    from pipeline.training.train import train_run

    result = PipelineResult(pages=[])
    stages = {
        "prepare": lambda: prepare_run(settings, inputs, force=force),
        "features": lambda: extract_features(settings, force=force),
        "train + evaluate": lambda: train_run(settings),
        "reports": lambda: result.pages.extend(write_reports(settings, all_films=True)),
    }
    for stage, work in stages.items():
        start = time.perf_counter()
        work()
        result.timings[stage] = time.perf_counter() - start
        log.info("%s done in %.1f s", stage, result.timings[stage])
    took = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result.timings.items())
    log.info("pipeline finished: %s", took)
    return result


def run_demo(
    settings: Settings,
    n_reviews: int = 6000,
    *,
    force: bool = False,
    corpus: Path | None = None,
) -> PipelineResult:
    """Generate the demo corpus (deterministic, cached on disk) and run the pipeline on it.

    ``corpus`` puts the generated CSV elsewhere than ``data/generated/`` (the main-job benchmark
    starts from an empty directory)."""
    from pipeline.data.demo import default_demo_path, generate_demo_corpus

    path = corpus or default_demo_path()
    start = time.perf_counter()
    if force or not path.exists():
        generate_demo_corpus(path, n_reviews=n_reviews, seed=settings.seed)
    corpus_seconds = time.perf_counter() - start
    result = run_pipeline(settings, [path], force=force)
    result.timings = {"demo corpus": corpus_seconds, **result.timings}
    return result
