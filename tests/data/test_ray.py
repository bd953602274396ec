"""The Ray engine on a local 2-CPU runtime: the same feature store as the local engine, shards
reused on a re-run, a killed encoder actor's shard redone, and batch scoring from Parquet that
agrees with the local scorer. Skipped without the extra (``pip install -e ".[ray]"``)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local runtime on 127.0.0.1
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.features.extract import extract_features  # noqa: E402
from pipeline.features.store import SHARD_FILES, FeatureStore  # noqa: E402

pytestmark = pytest.mark.ray

N_REVIEWS = 120
SHARD_SIZE = 15  # 8 shards: work for both actors, and time to kill one mid-shard
FLOAT_FILES = ("pooled_mean.npy", "pooled_cls.npy", "token_states.npy")


@pytest.fixture(scope="module")
def ray_runtime():
    """A local runtime with 2 CPUs, shared by this module's tests (the engine reuses it)."""
    from pipeline.encoding.e5_convert import cache_root

    os.environ.setdefault("DOUBAN_CACHE_DIR", str(cache_root()))  # workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/<name>/prepared of a small demo corpus, to be copied into each test's run."""
    from pipeline.data.demo import generate_demo_corpus
    from pipeline.data.prepare import prepare_run

    root = tmp_path_factory.mktemp("ray_demo")
    csv = generate_demo_corpus(root / "demo.csv", n_reviews=N_REVIEWS, seed=1)
    settings = settings_for(root / "runs", "base")
    prepare_run(settings, [csv], progress=False)
    return settings.paths.prepared


def settings_for(runs_dir: Path, run: str, **overrides: object) -> Settings:
    return load_settings(
        None,
        run_name=run,
        runs_dir=runs_dir,
        **{
            "prepare.workers": 1,
            "features.max_length": 64,
            "features.token_layers": [-1],
            "features.shard_size": SHARD_SIZE,
            "features.device": "cpu",
            # fp32: the engines must agree to float round-off, whatever their batches; int8
            # quantises each batch's activations with one scale, so its figures move a little
            # with the batch (tolerances in tests/data/test_int8.py)
            "features.precision": "fp32",
            **overrides,
        },
    )


def cli(tmp_path: Path, *args: str) -> str:
    """Run `douban ...` in this process (so on this module's Ray runtime), `douban features`
    with the settings of :func:`settings_for` as a config file; returns its output."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    config = tmp_path / "settings.toml"
    config.write_text(
        "[prepare]\nworkers = 1\n[features]\nmax_length = 64\ntoken_layers = [-1]\n"
        f'shard_size = {SHARD_SIZE}\ndevice = "cpu"\nprecision = "fp32"\n',
        encoding="utf-8",
    )
    settings = ["--config", str(config)] if args[0] == "features" else []
    result = CliRunner().invoke(app, [args[0], *settings, *args[1:]])
    assert result.exit_code == 0, result.output
    return result.output


def new_run(prepared: Path, runs_dir: Path, run: str) -> Settings:
    settings = settings_for(runs_dir, run)
    shutil.copytree(prepared, settings.paths.prepared)
    return settings


@pytest.fixture(scope="module")
def local_store(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    return extract_features(new_run(prepared, tmp_path_factory.mktemp("local"), "local"))


def assert_same_store(ray_dir: Path, local: FeatureStore) -> None:
    """Same fingerprint, shards and tokens; floats equal to fp16 round-off."""
    store = FeatureStore.open(ray_dir)
    assert store.fingerprint == local.fingerprint
    assert store.manifest["shards"] == local.manifest["shards"]
    assert store.manifest["engine"] == "ray" and local.manifest["engine"] == "local"
    timing = {"sample.json"}  # the encoder's timing: the local engine's budget plan measures it
    assert sorted(p.name for p in ray_dir.iterdir()) == sorted(
        p.name for p in local.root.iterdir() if p.name not in timing
    )
    for shard in local.manifest["shards"]:
        for name in SHARD_FILES:
            ours, theirs = ray_dir / shard["name"] / name, local.root / shard["name"] / name
            if name in FLOAT_FILES:
                np.testing.assert_allclose(
                    np.load(ours).astype(np.float32), np.load(theirs).astype(np.float32), atol=3e-3
                )
            else:
                assert ours.read_bytes() == theirs.read_bytes(), (shard["name"], name)


def stamps(features_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(features_dir)): p.stat().st_mtime_ns for p in features_dir.rglob("*")}


def test_ray_store_equals_local_and_is_reused(
    ray_runtime, prepared: Path, local_store: FeatureStore, tmp_path: Path
) -> None:
    settings = new_run(prepared, tmp_path, "ray")
    extract_features(settings, engine="ray", actors=2)
    features_dir = settings.paths.features
    assert_same_store(features_dir, local_store)

    before = stamps(features_dir)
    (features_dir / "manifest.json").unlink()  # as if the driver died after the last shard
    output = cli(
        tmp_path, "features", "--run", "ray", "--runs-dir", str(tmp_path), "--engine", "ray",
        "--actors", "2",
    )  # fmt: skip
    assert "0 shard(s) written, 8 reused" in " ".join(output.split())
    after = stamps(features_dir)
    assert {k: v for k, v in after.items() if k.startswith("shard-")} == {
        k: v for k, v in before.items() if k.startswith("shard-")
    }
    assert FeatureStore.open(features_dir).fingerprint == local_store.fingerprint


def _encoder_actors() -> list[psutil.Process]:
    """This test's encoder actor processes (workers of the runtime this process started)."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "ShardEncoder" in " ".join(child.cmdline())
    ]


def test_a_killed_actor_is_restarted_and_its_shard_redone(
    ray_runtime, prepared: Path, local_store: FeatureStore, tmp_path: Path
) -> None:
    settings = new_run(prepared, tmp_path, "killed")
    features_dir = settings.paths.features
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["store"] = extract_features(settings, engine="ray", actors=2)
        except Exception as error:  # reported by the assert below
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    killed: list[str] = []
    deadline = time.monotonic() + 120
    while not killed and worker.is_alive() and time.monotonic() < deadline:
        writing = sorted(features_dir.glob(".shard-*.tmp")) if features_dir.exists() else []
        if writing and _encoder_actors():
            for actor in _encoder_actors():  # every actor: the one writing is among them
                os.kill(actor.pid, signal.SIGKILL)
            killed = [path.name.split(".")[1] for path in writing]
        time.sleep(0.02)
    worker.join(timeout=180)
    assert killed, "no actor was caught writing a shard"
    assert "error" not in outcome, outcome.get("error")
    assert_same_store(features_dir, local_store)  # complete, identical, no temporary leftovers
    assert all((features_dir / name / "meta.json").exists() for name in killed)


# ---------------------------------------------------------------------------------------------
# batch scoring


@pytest.fixture(scope="module")
def trained(prepared: Path, local_store: FeatureStore) -> Settings:
    """The local run with a small classification head (it reads the encoder when scoring)."""
    from pipeline.workflow import train_run

    settings = settings_for(local_store.root.parents[1], "local", **{"head.epochs": 2})
    train_run(settings, ["head_cls"], progress=False)
    return settings


def test_scoring_a_parquet_file_on_ray_matches_the_local_scorer(
    ray_runtime, trained: Settings, tmp_path: Path
) -> None:
    from pipeline.predict.ray_scoring import score_file_on_ray
    from pipeline.predict.scorer import Scorer

    texts = pd.read_parquet(trained.paths.reviews, columns=["text"])["text"].head(40).tolist()
    texts += ["", None, "   ", "剧情拖沓，浪费时间", "Iron Man 还行吧"]
    source = tmp_path / "reviews.parquet"
    pd.DataFrame({"id": range(len(texts)), "Comment": texts}).to_parquet(source)
    output = tmp_path / "scored.parquet"
    counts = score_file_on_ray(trained.paths, source, output, actors=2, batch_size=8)
    scored = pd.read_parquet(output)

    local = Scorer(trained.paths).score_records(texts)
    assert counts == {"rows": len(texts), "errors": sum(r["error"] is not None for r in local)}
    runs_dir = str(trained.paths.root.parent)
    cli(
        tmp_path, "score", "--run", "local", "--runs-dir", runs_dir, "-i", str(source), "-o",
        str(tmp_path / "cli.parquet"), "--engine", "ray", "--actors", "1",
    )  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cli.parquet"), scored)
    assert scored["row"].tolist() == list(range(len(texts)))
    assert scored["text"].tolist() == [r["text"] for r in local]
    stars = [None if pd.isna(star) else int(star) for star in scored["pred_star"]]
    assert stars == [r["pred_star"] for r in local]
    ok = [i for i, r in enumerate(local) if r["error"] is None]
    probs = scored.loc[ok, [f"prob_{s}" for s in range(1, 6)]].to_numpy(dtype=float)
    np.testing.assert_allclose(probs, [local[i]["probs"] for i in ok], atol=2e-3)
    assert scored["error"].tolist() == [r["error"] or "" for r in local]


def test_ray_reads_json_lines_and_writes_the_local_engines_csv(
    ray_runtime, trained: Settings, tmp_path: Path
) -> None:
    import json

    from pipeline.predict.files import score_file
    from pipeline.predict.ray_scoring import score_file_on_ray
    from pipeline.predict.scorer import Scorer

    texts = pd.read_parquet(trained.paths.reviews, columns=["text"])["text"].head(12).tolist()
    lines = [json.dumps({"Comment": t}, ensure_ascii=False) for t in texts] + ["{oops", '"好看"']
    source = tmp_path / "reviews.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    on_ray, local = tmp_path / "ray.csv", tmp_path / "local.csv"
    counts = score_file_on_ray(trained.paths, source, on_ray, actors=1, batch_size=4)
    assert counts == score_file(Scorer(trained.paths), source, local) == {"rows": 14, "errors": 1}
    ray_rows, local_rows = (pd.read_csv(p, keep_default_na=False) for p in (on_ray, local))
    assert ray_rows["row"].tolist() == list(range(14))
    assert ray_rows["error"].tolist() == local_rows["error"].tolist()
    assert ray_rows["error"].iloc[12] == "not a JSON line"
    assert ray_rows["pred_star"].tolist() == local_rows["pred_star"].tolist()
