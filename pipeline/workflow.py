"""The journey in order: prepare -> features -> train -> evaluate -> fine-tune -> reports.

Each stage does one thing and is skipped when its inputs' fingerprint is unchanged (the one
caching rule: prepare and features check their manifests, a model its config.json, an
evaluation pair the fingerprint it recorded, the reports their manifest). This module is the only
place that sequences stages: `douban demo` and `douban run` run every one; `douban train`,
`douban evaluate` and `douban finetune` run their part. Training and evaluation write a new
generation of the run's model set (models, metrics and predictions together) that becomes
current at once when both are done, so a kill leaves the old complete set or the new one.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts import (
    clean_generations,
    clean_leftovers,
    fingerprint,
    read_manifest,
    sha256_file,
    write_manifest,
)
from pipeline.config import FeatureSettings, ModelSet, Settings
from pipeline.data.demo import default_demo_path, generate_demo_corpus
from pipeline.data.prepare import prepare_run
from pipeline.errors import StageMissingError
from pipeline.features.extract import extract_features
from pipeline.features.store import FeatureStore
from pipeline.lab.run import run_lab
from pipeline.locking import writes_run
from pipeline.modeling.bundle import list_models
from pipeline.modeling.sentence import model_name
from pipeline.reports.site import write_reports
from pipeline.training.data import TrainingData
from pipeline.training.evaluate import evaluate_models, needs_evaluation, read_metrics
from pipeline.training.finetune import finetune_model, is_current
from pipeline.training.train import ENSEMBLES, FINETUNE_ENSEMBLE_NAME, models_to_train, train_models
from pipeline.version import __version__

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """The report pages written and how long each stage took (seconds)."""

    pages: list[Path]
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- train + evaluate


@writes_run("train")
def train_run(
    settings: Settings,
    models: Sequence[str] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the models that are not current (default: all of `douban train`), then evaluate
    what changed, in one new generation; returns the metrics document. Nothing to train and
    nothing to evaluate: the current set is kept as it is."""
    paths = settings.paths
    clean_generations(paths.trained)
    data = TrainingData.load(paths)
    current = paths.model_set
    todo = models_to_train(settings, data, current, models, force=force)
    names = sorted({*list_models(current.models), *todo})
    if not todo and not needs_evaluation(settings, data, current, names):
        log.info("models and metrics of run %s are up to date: nothing to train", paths.name)
        return read_metrics(current)
    with paths.new_model_set() as new:
        train_models(settings, data, new, todo, progress=progress)
        return evaluate_models(settings, data, new, progress=progress)


@writes_run("evaluate")
def evaluate_run(
    settings: Settings,
    models: Sequence[str] | None = None,
    external: Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the run's models (default: all) into a new generation; with ``external``, on
    that CSV (evaluation ``cross_corpus``). Returns the metrics document."""
    paths = settings.paths
    clean_generations(paths.trained)
    current = paths.model_set
    if external is None:
        data, evaluation = TrainingData.load(paths), None
    else:
        data, evaluation = external_data(settings, external), "cross_corpus"
    names = list(models or list_models(current.models))
    if not force and not needs_evaluation(settings, data, current, names, evaluation):
        log.info("evaluation of run %s is up to date", paths.name)
        return read_metrics(current)
    with paths.new_model_set() as new:
        return evaluate_models(
            settings, data, new, names, evaluation=evaluation, force=force, progress=progress
        )


@writes_run("finetune")
def finetune_run(
    settings: Settings,
    *,
    force: bool = False,
    evaluate: bool = True,
    external: Path | None = None,
    progress: bool = True,
) -> Path:
    """Fine-tune (see :func:`pipeline.training.finetune.finetune_model`) into a new generation;
    then, with ``evaluate`` and a feature store to evaluate on, evaluate it, fit its ensemble
    with TF-IDF + LR (a classifier only) and evaluate that too (and both on ``external``).
    Nothing of that to do: the current set is kept. Returns the model's directory in the run's
    current set."""
    paths = settings.paths
    clean_generations(paths.trained)
    name = model_name(settings.finetune.output)
    data = external_set = None
    if evaluate and read_manifest(paths.features) is None:
        log.warning(
            "%s is not evaluated: run %s has no feature store, which evaluation shares with the "
            "other models; run `douban features --run %s` then `douban evaluate`",
            name,
            paths.name,
            paths.name,
        )
    elif evaluate:
        data = TrainingData.load(paths)
        external_set = None if external is None else external_data(settings, external)
    ensemble = [FINETUNE_ENSEMBLE_NAME] if name in ENSEMBLES[FINETUNE_ENSEMBLE_NAME] else []
    names = [name, *ensemble]

    def ensemble_todo(models: ModelSet) -> list[str]:
        if data is None or not ensemble:
            return []
        return models_to_train(settings, data, models, ensemble, force=force)

    def evaluations(models: ModelSet, names: list[str]) -> list[tuple[TrainingData, str | None]]:
        wanted = [] if data is None else [(data, None)]
        wanted += [] if external_set is None else [(external_set, "cross_corpus")]
        return [
            (d, e) for d, e in wanted if force or needs_evaluation(settings, d, models, names, e)
        ]

    current = paths.model_set
    if (
        not force
        and is_current(settings, current)
        and not ensemble_todo(current)
        and not evaluations(current, names)
    ):
        log.info("%s of run %s and its figures are up to date", name, paths.name)
        return current.model(name)
    with paths.new_model_set() as new:
        finetune_model(settings, new, force=force, progress=progress)
        trained = ensemble_todo(new)  # the ensemble, and its TF-IDF member when that is stale
        if data is not None:
            train_models(settings, data, new, trained, progress=progress)
        names = list(dict.fromkeys([*names, *trained]))
        for d, evaluation in evaluations(new, names):
            evaluate_models(
                settings, d, new, names, evaluation=evaluation, force=force, progress=progress
            )
    return paths.model(name)


def external_data(settings: Settings, csv: Path) -> TrainingData:
    """Prepare and encode another corpus with the run's own encoder and feature layers, under
    ``runs/<run>/external/<name>/`` (both stages skip when already up to date)."""
    paths = settings.paths
    if read_manifest(paths.features) is None:
        raise StageMissingError(
            f"run {paths.name} has no feature store", f"run `douban features --run {paths.name}`"
        )
    store = FeatureStore.open(paths.features)
    spec = store.encoder
    ext = settings.model_copy(
        update={
            "runs_dir": paths.root / "external",
            "run_name": re.sub(r"[^\w.-]+", "_", csv.stem).strip(".") or "external",
            "prepare": settings.prepare.model_copy(update={"holdout_films": []}),
            "features": FeatureSettings(
                encoder=spec["name"],
                pooling=spec.get("pooling"),
                prefix=spec.get("prefix"),
                max_length=store.max_length,
                token_budget=settings.features.token_budget,
                token_layers=list(store.token_layers),
                shard_size=settings.features.shard_size,
                device=settings.features.device,
                encode_budget=None,  # an evaluation corpus is encoded whole
            ),
        }
    )
    prepare_run(ext, [csv])
    extract_features(ext)
    return TrainingData.load(ext.paths)


# --------------------------------------------------------------------------- reports

REPORTS_STAGE = "reports"


def reports_fingerprint(settings: Settings) -> str:
    """The reports read the prepared reviews, the features and the current model set (its
    metrics.json changes whenever its models or predictions do) and lay films out by seed."""
    paths = settings.paths
    prepared, features = read_manifest(paths.prepared), read_manifest(paths.features)
    if prepared is None or features is None or not paths.metrics.exists():
        raise StageMissingError(
            f"run {paths.name} is not trained yet", f"run `douban run --run {paths.name}`"
        )
    metrics = sha256_file(paths.metrics)
    return fingerprint(
        __version__, prepared["fingerprint"], features["fingerprint"], metrics, settings.seed
    )


def reports_run(settings: Settings, *, force: bool = False, progress: bool = True) -> list[Path]:
    """Every film's report page and the index (index last); skipped when the reports on disk
    were written from the same run state."""
    out_dir = settings.reports_dir / settings.run_name
    fp = reports_fingerprint(settings)
    manifest = read_manifest(out_dir) or {}
    pages = [out_dir / name for name in manifest.get("pages", [])]
    if not force and manifest.get("fingerprint") == fp and all(p.exists() for p in pages):
        log.info("reports of run %s are up to date: %s", settings.run_name, out_dir)
        return pages
    clean_leftovers(out_dir)
    pages = write_reports(settings, all_films=True, progress=progress)
    write_manifest(out_dir, REPORTS_STAGE, fp, pages=[p.name for p in pages])
    return pages


# --------------------------------------------------------------------------- the whole journey


def run_pipeline(settings: Settings, inputs: list[Path], *, force: bool = False) -> PipelineResult:
    """Run every stage for ``settings.run_name``; each one skips when it is up to date."""
    result = PipelineResult(pages=[])
    stages: dict[str, Callable[[], Any]] = {
        "prepare": lambda: prepare_run(settings, inputs, force=force),
        "features": lambda: extract_features(settings, force=force),
        "train + evaluate": lambda: train_run(settings, force=force),
        "fine-tune + evaluate": lambda: finetune_run(settings, force=force),
        "reports": lambda: result.pages.extend(reports_run(settings, force=force)),
    }
    if not settings.finetune.in_run:
        del stages["fine-tune + evaluate"]
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
    path = corpus or default_demo_path()
    start = time.perf_counter()
    if force or not path.exists():
        generate_demo_corpus(path, n_reviews=n_reviews, seed=settings.seed)
    corpus_seconds = time.perf_counter() - start
    result = run_pipeline(settings, [path], force=force)
    start = time.perf_counter()
    demo_lab(settings, force=force)
    result.timings = {"demo corpus": corpus_seconds, **result.timings}
    result.timings["lab"] = time.perf_counter() - start
    return result


# A lab small enough for the demo (under a minute on a CPU): frozen-encoder views, or before vs
# after when a fine-tuned model exists; `douban lab all` computes the full-size one.
DEMO_LAB = {
    "eval_reviews": 300,
    "probe_train_reviews": 600,
    "words": ["好看", "失望", "一般", "精彩"],
    "word_reviews": 40,
    "head_reviews": 40,
    "tsne": False,  # PCA maps only: t-SNE of every layer is most of the lab's time
}


def demo_lab(settings: Settings, *, force: bool = False) -> None:
    """So every Model lab view shows something on the demo (each part is cached by fingerprint,
    so a second demo reuses it)."""
    small = settings.model_copy(update={"lab": settings.lab.model_copy(update=DEMO_LAB)})
    run_lab(small, force=force, progress=False)
