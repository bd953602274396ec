"""Shared fixtures. ``demo_run``: one small trained run per test session (demo corpus ->
prepare -> features -> train), for tests of evaluation, scoring and model behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings

DEMO_REVIEWS = 1000


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Douban samples beside the repository; tests using them skip when absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is not present")
    return path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A trained demo run: 1,000 demo reviews (64 tokens at most), token states of the last two
    layers, every baseline and head (few epochs). The converted e5 encoder is reused from the
    persistent cache (``DOUBAN_CACHE_DIR``, default the user cache directory)."""
    import torch

    from pipeline.data.demo import generate_demo_corpus
    from pipeline.data.prepare import prepare_run
    from pipeline.encoding.e5_convert import cache_root
    from pipeline.features.extract import extract_features
    from pipeline.workflow import train_run

    os.environ.setdefault("DOUBAN_CACHE_DIR", str(cache_root()))
    torch.set_num_threads(1)  # intra-op threads only spin on a shared 2-core machine
    root = tmp_path_factory.mktemp("demo_run")
    csv = generate_demo_corpus(root / "demo_reviews.csv", n_reviews=DEMO_REVIEWS, seed=0)
    settings = load_settings(
        None,
        run_name="demo",
        runs_dir=root / "runs",
        **{
            "prepare.workers": 1,
            "features.token_layers": [-2, -1],
            "features.max_length": 64,
            # fp32, so tests/model/test_onnx.py holds ONNX Runtime to torch's arithmetic; int8
            # (the CPU default) is tested against fp32 in tests/data/test_int8.py
            "features.precision": "fp32",
            "head.epochs": 6,
            "head.patience": 3,
            "head.hops": 2,
            "head.batch_size": 32,
        },
    )
    prepare_run(settings, [csv])
    extract_features(settings)
    train_run(settings, progress=False)
    return settings
