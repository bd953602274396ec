"""Scoring in length-sorted batches gives every input its own answer, in input order, on every
path (a list, a stream, a file in each format, the service), the same as scoring one by one;
Parquet goes in and out; a model that reads no encoder never loads one."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from pipeline.predict.batching import length_batches, prefetched
from pipeline.predict.files import read_texts, score_file
from pipeline.predict.scorer import Scorer
from pipeline.serve.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer(demo_run):
    return Scorer.load("demo", "head_cls", runs_dir=demo_run.runs_dir)


@pytest.fixture(scope="module")
def texts(scorer):
    """Real-length variety from the run's reviews, shuffled, with inputs that cannot be scored."""
    reviews = pd.read_parquet(scorer.paths.reviews, columns=["comment"])["comment"].tolist()
    picked = random.Random(3).sample(reviews, 90)
    picked[10:10] = ["", "   ", "好" * 400, "great movie"]
    return picked


@pytest.fixture(scope="module")
def one_by_one(scorer, texts):
    return [scorer.score([t], explain=True)[0] for t in texts]


def _same(records, expected) -> None:
    assert len(records) == len(expected)
    for got, want in zip(records, expected, strict=True):
        got = got if isinstance(got, dict) else got.to_dict()
        assert got["text"] == want.text and got["error"] == want.error
        assert got["pred_star"] == want.pred_star
        if want.probs is not None:
            assert got["probs"] == pytest.approx(want.probs, abs=1e-4)


def test_length_batches_cover_every_item_once_longest_first_per_window():
    lengths = [random.Random(0).randint(1, 200) for _ in range(50)]
    items = list(range(50))
    batches = list(length_batches(items, lengths, batch_size=4, lookahead=20))
    assert sorted(i for b in batches for i in b) == items
    assert all(len(b) <= 4 for b in batches)
    first_window = [i for b in batches[:5] for i in b]
    assert set(first_window) == set(range(20))  # a window never reaches into the next
    ordered = sorted((lengths[i] for i in range(20)), reverse=True)
    assert [lengths[i] for i in first_window] == ordered


def test_prefetched_keeps_order_and_prepares_each_batch_once():
    seen: list[int] = []
    out = list(prefetched(range(7), lambda b: seen.append(b) or b * 10))
    assert out == [(b, b * 10) for b in range(7)] and sorted(seen) == list(range(7))


def test_a_batch_gives_the_same_records_as_one_by_one(scorer, texts, one_by_one):
    records = scorer.score(texts, batch_size=8, explain=True)
    _same(records, one_by_one)
    assert [r.row for r in records] == list(range(len(texts)))
    for got, want in zip(records, one_by_one, strict=True):  # attention too, word by word
        assert [w[:3] for w in got.words] == [w[:3] for w in want.words]


def test_a_stream_answers_in_input_order(scorer, texts, one_by_one):
    answers = list(scorer(iter(texts), top_k=None))
    assert len(answers) == len(texts)
    for answer, want in zip(answers, one_by_one, strict=True):
        if want.error is None:
            best = max(answer, key=lambda a: a["score"])
            assert best["label"] == want.pred_star


@pytest.mark.parametrize("out_suffix", [".csv", ".jsonl", ".parquet"])
def test_files_in_every_format_keep_rows_in_order(scorer, texts, one_by_one, tmp_path, out_suffix):
    source = tmp_path / "reviews.parquet"
    table = pa.table({"id": list(range(len(texts))), "Comment": texts})
    pq.write_table(table, source, row_group_size=25)  # several row groups, streamed
    assert len(read_texts(source)) == len(texts) and list(read_texts(source)) == texts
    out = tmp_path / f"scored{out_suffix}"
    counts = score_file(scorer, source, out)
    assert counts == {"rows": len(texts), "errors": 2}
    if out_suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        _same(records, one_by_one)
        return
    frame = (
        pd.read_parquet(out)
        if out_suffix == ".parquet"
        else pd.read_csv(out, keep_default_na=False, na_values=[""])
    )
    assert frame["row"].tolist() == list(range(len(texts)))
    assert frame["text"].fillna("").tolist() == texts
    stars = [r.pred_star for r in one_by_one]
    assert [None if pd.isna(s) else int(s) for s in frame["pred_star"]] == stars


def test_a_parquet_round_trip_matches_the_csv_output(scorer, texts, tmp_path):
    source = tmp_path / "in.csv"
    pd.DataFrame({"comment": texts}).to_csv(source, index=False)
    score_file(scorer, source, tmp_path / "out.csv")
    score_file(scorer, source, tmp_path / "out.parquet")
    from_csv = pd.read_csv(tmp_path / "out.csv", keep_default_na=False, na_values=[""])
    from_parquet = pd.read_parquet(tmp_path / "out.parquet")
    assert list(from_parquet.columns) == list(from_csv.columns)
    for column in ("row", "pred_star", "prob_3", "expected_star"):
        pd.testing.assert_series_equal(from_parquet[column], from_csv[column], check_dtype=False)
    assert from_parquet["error"].tolist() == from_csv["error"].fillna("").tolist()


def test_jsonl_input_keeps_bad_lines_as_error_records(scorer, tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"Comment": "好看"}), "{not json", json.dumps("难看"), json.dumps({"x": 1})]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert score_file(scorer, source, out) == {"rows": 4, "errors": 2}
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["error"] for r in records] == [None, "not a JSON line", None, records[3]["error"]]
    assert records[3]["error"].startswith("no review key")


def test_the_service_answers_each_text_as_one_by_one(demo_run, scorer, texts, one_by_one):
    app = create_app("demo", demo_run.runs_dir, threads=1, load_in_background=False)
    with TestClient(app) as client:
        body = client.post("/v1/score", json={"texts": texts, "model": "head_cls"}).json()
    _same(body["records"], one_by_one)


def test_a_tfidf_model_loads_no_encoder_runtime(demo_run):
    code = (
        "import sys; from pipeline.predict.scorer import Scorer; "
        f"s = Scorer.load('demo', 'tfidf_lr', runs_dir={str(demo_run.runs_dir)!r}); "
        "r = s.score(['这部电影太好看了', '剧情拖沓'])[0]; "
        "assert r.pred_star is not None and r.top_words == [], r; "
        "print(sorted(m for m in ('onnxruntime', 'torch', 'transformers', 'tokenizers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    explained = Scorer.load("demo", "tfidf_lr", runs_dir=demo_run.runs_dir).score(
        ["这部电影太好看了"], explain=True
    )[0]
    assert explained.top_words and explained.attention_model  # asked for: the head explains it
