"""`douban doctor`: read every artifact of a run the way the stages do, and say per stage
whether it is whole, missing, or broken and which command rebuilds it. Each check is the
reader a stage uses itself (so a file that passes here is one the stages can read), never a
looser look; nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.artifacts import (
    MODEL_WEIGHTS,
    WEIGHTS_SHA256,
    current_generation,
    parquet_file,
    read_json,
    read_manifest,
    read_table,
    verify_checksum,
)
from pipeline.config import RunPaths
from pipeline.errors import DoubanError
from pipeline.locking import LOCK_FILE, current_writer

OK, MISSING, BROKEN = "ok", "missing", "broken"


@dataclass
class Check:
    """One artifact's verdict; ``fix`` is the command that rebuilds it."""

    stage: str
    artifact: str
    status: str
    detail: str = ""
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _run_check(stage: str, artifact: str, fix: str, read: Callable[[], str | None]) -> Check:
    try:
        detail = read()
    except FileNotFoundError as err:
        return Check(stage, artifact, MISSING, str(err), fix)
    except (DoubanError, OSError, ValueError, KeyError, TypeError) as err:
        return Check(stage, artifact, BROKEN, str(err), fix)
    return Check(stage, artifact, OK, detail or "")


def _parquet_rows(path: Any) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    table = read_table(path)
    return f"{table.num_rows:,} rows"


def _prepared(paths: RunPaths) -> list[Check]:
    fix = f"douban prepare --run {paths.name} --input <csv> --force"

    def manifest() -> str:
        if not (paths.prepared / "manifest.json").exists():
            raise FileNotFoundError(f"{paths.prepared} has no manifest: prepare did not finish")
        return read_json(paths.prepared / "manifest.json")["fingerprint"]

    def summary() -> str:
        if not paths.summary.exists():
            raise FileNotFoundError(f"{paths.summary} does not exist")
        summary = read_json(paths.summary)
        kept = (summary.get("sample") or {}).get("reviews", summary["kept"])  # after --sample
        with parquet_file(paths.reviews) as reviews:
            rows = reviews.metadata.num_rows
        if rows != kept:
            raise ValueError(f"the summary counts {kept:,} reviews, reviews.parquet {rows:,}")
        return f"{kept:,} reviews"

    return [
        _run_check("prepare", "manifest.json", fix, manifest),
        _run_check("prepare", "reviews.parquet", fix, lambda: _parquet_rows(paths.reviews)),
        _run_check("prepare", "rejects.parquet", fix, lambda: _parquet_rows(paths.rejects)),
        _run_check("prepare", "summary.json", fix, summary),
    ]


def _features(paths: RunPaths) -> list[Check]:
    from pipeline.features.store import FeatureStore

    if not paths.features.exists():
        return [Check("features", "features/", MISSING, "not extracted (text models need none)",
                      f"douban features --run {paths.name}")]  # fmt: skip

    def store() -> str:  # maps every shard file: a truncated one does not open
        opened = FeatureStore.open(paths.features)
        return f"{len(opened):,} of {opened.num_prepared:,} reviews encoded"

    return [_run_check("features", "features/", f"douban features --run {paths.name} --force",
                       store)]  # fmt: skip


def _models(paths: RunPaths) -> list[Check]:
    from pipeline.modeling.spec import list_models

    fix = f"douban train --run {paths.name} --force"
    if not paths.trained.exists():
        return [Check("train", "trained/", MISSING, "no models yet", fix.removesuffix(" --force"))]

    def pointer() -> str:
        generation = current_generation(paths.trained)
        if generation is None:
            raise FileNotFoundError(f"{paths.trained / 'CURRENT'} does not exist")
        if not (generation / "models").is_dir():
            raise ValueError(f"{generation / 'models'} is not a folder")
        return generation.name

    checks = [_run_check("train", "trained/CURRENT", fix, pointer)]
    if checks[0].status != OK:
        return checks
    pinned = paths.pinned()
    for name in list_models(pinned.models):
        model_dir = pinned.model(name)
        stage = "finetune" if name.startswith("finetune_") else "train"
        rebuild = f"douban {stage} --run {paths.name} --force"

        def weights(model_dir: Any = model_dir, rebuild: str = rebuild) -> str:
            config = read_json(model_dir / "config.json")
            verify_checksum(model_dir / MODEL_WEIGHTS, config.get(WEIGHTS_SHA256), rebuild)
            checked = "checksum ok" if config.get(WEIGHTS_SHA256) else "no checksum recorded"
            return f"{config.get('kind')}, {checked}"

        checks.append(_run_check(stage, f"models/{name}", rebuild, weights))
    evaluate = f"douban evaluate --run {paths.name} --force"

    def metrics() -> str:
        default = read_json(pinned.metrics).get("default_model") or {}
        return f"default model {default.get('name')}"

    checks.append(_run_check("evaluate", "metrics.json", evaluate, metrics))
    checks.append(
        _run_check(
            "evaluate", "predictions.parquet", evaluate, lambda: _parquet_rows(pinned.predictions)
        )
    )
    return checks


def _writer(paths: RunPaths) -> list[Check]:
    """Whether another process holds the run's write lock now."""
    holder = current_writer(paths.root)
    if holder is None:
        return []
    return [Check("lock", LOCK_FILE, "busy", f"being written now by {holder}", "wait for it")]


def check_run(paths: RunPaths) -> list[Check]:
    """Every stage's artifacts of the run, in the order of the data's journey."""
    if read_manifest(paths.prepared) is None and not paths.prepared.exists():
        prepared = [Check("prepare", "prepared/", MISSING, "not prepared",
                          f"douban prepare --run {paths.name} --input <csv>")]  # fmt: skip
    else:
        prepared = _prepared(paths)
    return [*_writer(paths), *prepared, *_features(paths), *_models(paths)]
