"""The prepare stage end to end (pipeline/prepare.py): schema, caching, atomicity, real data."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import pipeline.data.prepare as prepare_module
from pipeline.artifacts import read_json, read_manifest
from pipeline.config import Settings, load_settings
from pipeline.data.prepare import REVIEWS_SCHEMA, prepare_run
from pipeline.errors import DatasetError, InputError
from pipeline.run import Run

SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"
HEADER = ["Movie_Name_EN", "Movie_Name_CN", "Date", "Star", "Comment", "Like"]
FILMS = [("Iron Man", "钢铁侠1"), ("The Great Wall", "长城"), ("Lost In Thailand", "泰囧")]
PHRASES = ["特效震撼", "剧情拖沓", "演员演技在线", "笑点密集", "配乐一般", "结局仓促", "值回票价"]

# the columns and types of prepared/reviews.parquet in docs/architecture.md
ARCHITECTURE_SCHEMA = {
    "review_id": pa.int64(), "film": pa.string(), "film_en": pa.string(),
    "film_cn": pa.string(), "date": pa.string(), "star": pa.int8(), "like": pa.int64(),
    "comment": pa.string(), "text": pa.string(), "tokens": pa.list_(pa.string()),
    "split": pa.string(), "source": pa.string(), "row_number": pa.int64(),
}  # fmt: skip


def write_reviews(path: Path, n: int = 300, extra: list[list[str]] = ()) -> Path:
    rows = []
    for i in range(n):
        en, cn = FILMS[i % len(FILMS)]
        text = f"{cn}{PHRASES[i % len(PHRASES)]}，{PHRASES[(i * 3) % len(PHRASES)]}！第{i}次看"
        rows.append([en, cn, f"2016-0{1 + i % 9}-1{i % 10}", str(1 + i % 5), text, str(i)])
    rows += [
        ["Iron Man", "钢铁侠1", "", "3", "还行", ""],
        ["The Great Wall", "长城", "", "4", "还行", ""],
    ]
    rows += [["Iron Man", "钢铁侠1", "", "9", "星级不对", ""], *extra]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    base = {"run_name": "t", "runs_dir": tmp_path / "runs", "prepare.workers": 1}
    return load_settings(None, **{**base, **overrides})


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return write_reviews(tmp_path / "reviews.csv")


def test_output_follows_the_architecture_schema(tmp_path: Path, csv_path: Path) -> None:
    settings = settings_for(tmp_path)
    summary = prepare_run(settings, [csv_path], progress=False)
    table = pq.read_table(settings.paths.reviews)
    assert {f.name: f.type for f in table.schema} == ARCHITECTURE_SCHEMA
    assert table.schema.names == list(ARCHITECTURE_SCHEMA) == REVIEWS_SCHEMA.names
    rows = table.to_pylist()
    assert [r["review_id"] for r in rows] == list(range(len(rows))) and len(rows) == 302
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert rows[0]["tokens"][:2] == ["钢铁侠1", "特效"]  # film title kept whole
    assert all(r["tokens"] and "，" not in r["tokens"] and "!" not in r["tokens"] for r in rows)
    assert summary["rows_read"] == 303 and summary["kept"] == 302
    assert summary["rejected"] == {"star_out_of_range": 1}
    assert summary["rows_read"] == (
        summary["kept"] + summary["duplicates"] + sum(summary["rejected"].values())
    )
    assert sum(summary["splits"][s] for s in ("train", "val", "test")) == summary["kept"]
    assert summary["films"]["钢铁侠1"] == {"en": "Iron Man", "cn": "钢铁侠1", "reviews": 101}
    assert summary["is_demo"] is False and summary["encodings"] == {"reviews.csv": "utf-8"}
    assert pq.read_table(settings.paths.rejects).to_pylist()[0]["reason"] == "star_out_of_range"
    assert read_json(settings.paths.summary) == summary
    assert read_json(settings.paths.settings)["run_name"] == "t"


def test_second_run_is_a_no_op(
    tmp_path: Path, csv_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    first = prepare_run(settings, [csv_path], progress=False)
    stamp = settings.paths.reviews.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="pipeline.data.prepare"):
        again = prepare_run(settings_for(tmp_path, **{"prepare.workers": 2}), [csv_path])
    assert "prepared data is up to date" in caplog.text
    assert again == first
    assert settings.paths.reviews.stat().st_mtime_ns == stamp


def test_changed_settings_or_inputs_recompute(tmp_path: Path, csv_path: Path) -> None:
    settings = settings_for(tmp_path)
    prepare_run(settings, [csv_path], progress=False)
    fp = read_manifest(settings.paths.prepared)["fingerprint"]

    summary = prepare_run(settings_for(tmp_path, **{"prepare.val_frac": 0.2}), [csv_path])
    assert read_manifest(settings.paths.prepared)["fingerprint"] != fp
    assert summary["splits"]["val"] == pytest.approx(0.2 * summary["kept"], abs=3)

    write_reviews(csv_path, extra=[["Iron Man", "钢铁侠1", "", "5", "新加的一条", ""]])
    summary = prepare_run(settings, [csv_path], progress=False)
    assert summary["kept"] == 303

    stamp = settings.paths.reviews.stat().st_mtime_ns
    prepare_run(settings, [csv_path], force=True, progress=False)
    assert settings.paths.reviews.stat().st_mtime_ns != stamp


def test_crash_mid_write_leaves_no_half_written_artifact(
    tmp_path: Path, csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path, **{"prepare.chunk_rows": 100})
    real_segment_chunks = prepare_module.segment_chunks

    def crash_after_first_chunk(*args: object, **kwargs: object):
        chunks = real_segment_chunks(*args, **kwargs)
        yield next(chunks)
        raise KeyboardInterrupt("simulated crash while writing reviews.parquet")

    monkeypatch.setattr(prepare_module, "segment_chunks", crash_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        prepare_run(settings, [csv_path], progress=False)
    assert not settings.paths.prepared.exists()
    assert not list(settings.paths.root.glob(".prepared*"))  # no temporary directory left

    monkeypatch.undo()
    good = prepare_run(settings, [csv_path], progress=False)
    before = settings.paths.reviews.read_bytes()
    monkeypatch.setattr(prepare_module, "segment_chunks", crash_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        prepare_run(settings, [csv_path], force=True, progress=False)
    assert settings.paths.reviews.read_bytes() == before  # the previous result is intact
    assert read_json(settings.paths.summary) == good


def test_held_out_films_and_unknown_names(tmp_path: Path, csv_path: Path) -> None:
    settings = settings_for(tmp_path, **{"prepare.holdout_films": ["the great wall"]})
    summary = prepare_run(settings, [csv_path], progress=False)
    assert summary["holdout_films"] == ["长城"]
    table = pq.read_table(settings.paths.reviews, columns=["film", "split", "text"]).to_pylist()
    assert all(r["split"] == "test" for r in table if r["film"] == "长城")
    shared = [r for r in table if r["film"] != "长城" and r["split"] == "test"]
    assert [r["text"] for r in shared] == ["还行"]  # only through a text shared with 长城
    assert summary["splits"]["test_from_other_films"] == 1

    bad = settings_for(tmp_path, **{"prepare.holdout_films": ["Avatar"]})
    with pytest.raises(DatasetError, match="Avatar.*Available films: .*长城 / The Great Wall"):
        prepare_run(bad, [csv_path], progress=False)


def test_input_without_usable_reviews_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(",".join(HEADER) + "\nIron Man,钢铁侠1,,7,好,\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no usable reviews"):
        prepare_run(settings_for(tmp_path), [path], progress=False)
    assert not settings_for(tmp_path).paths.prepared.exists()


def test_user_dictionary_is_used_and_checked(tmp_path: Path, csv_path: Path) -> None:
    missing = settings_for(tmp_path, **{"prepare.user_dict": tmp_path / "nope.txt"})
    with pytest.raises(FileNotFoundError, match="user dictionary"):
        prepare_run(missing, [csv_path], progress=False)
    words = tmp_path / "words.txt"
    words.write_text("拖沓 1\n剧情拖沓 900000\n", encoding="utf-8")
    settings = settings_for(tmp_path, **{"prepare.user_dict": words})
    prepare_run(settings, [csv_path], progress=False)
    tokens = pq.read_table(settings.paths.reviews, columns=["tokens"])["tokens"].to_pylist()
    assert any("剧情拖沓" in t for t in tokens)
    # the run keeps its own copy, so new text segments as the reviews did once the file is gone
    copy = settings.paths.prepared / "user_dict.txt"
    assert copy.read_bytes() == words.read_bytes()
    assert "user_dict.txt" in read_manifest(settings.paths.prepared)["files"]
    words.unlink()
    assert "剧情拖沓" in Run.open(settings.paths.root).segmenter.tokens("剧情拖沓，不推荐")


def test_demo_corpus_is_flagged(tmp_path: Path) -> None:
    path = write_reviews(tmp_path / "demo_reviews.csv", n=40)
    assert prepare_run(settings_for(tmp_path), [path], progress=False)["is_demo"] is True


@pytest.mark.real_data
@pytest.mark.slow
def test_real_dmsc_sample_end_to_end(tmp_path: Path) -> None:
    sample = SHARED_DATA / "dmsc_sample.csv"
    if not sample.exists():
        pytest.skip(f"{sample} is not available")
    settings = settings_for(tmp_path, **{"prepare.workers": 2})
    summary = prepare_run(settings, [sample], progress=False)
    assert summary["rows_read"] == 52_975
    assert summary["rows_read"] == (
        summary["kept"] + summary["duplicates"] + sum(summary["rejected"].values())
    )
    assert len(summary["films"]) == 28
    table = pq.read_table(settings.paths.reviews, columns=["text", "split", "tokens"])
    assert table.num_rows == summary["kept"]
    texts_by_split = {
        split: set(table.filter(pc.equal(table["split"], split))["text"].to_pylist())
        for split in ("train", "val", "test")
    }
    assert not texts_by_split["train"] & texts_by_split["test"]
    assert not texts_by_split["train"] & texts_by_split["val"]
    assert not texts_by_split["val"] & texts_by_split["test"]
    assert abs(summary["splits"]["test"] / summary["kept"] - 0.1) < 0.01


def test_replacing_prepared_never_deletes_foreign_files(tmp_path: Path, csv_path: Path) -> None:
    settings = settings_for(tmp_path)
    prepare_run(settings, [csv_path], progress=False)
    manifest = read_manifest(settings.paths.prepared)
    assert manifest["files"] == [
        "manifest.json", "rejects.parquet", "reviews.parquet", "summary.json",
    ]  # fmt: skip
    mine = settings.paths.prepared / "notes.txt"
    mine.write_text("the user's own file")
    with pytest.raises(InputError, match=r"prepare did not write \(notes.txt\)") as err:
        prepare_run(settings, [csv_path], force=True, progress=False)
    assert "--run NAME" in str(err.value)
    assert mine.read_text() == "the user's own file"
    mine.unlink()
    prepare_run(settings, [csv_path], force=True, progress=False)  # only its own files: fine

    foreign = settings_for(tmp_path, run_name="elsewhere")
    foreign.paths.prepared.mkdir(parents=True)
    (foreign.paths.prepared / "reviews.parquet").write_text("not ours: no manifest says so")
    with pytest.raises(InputError, match="reviews.parquet"):
        prepare_run(foreign, [csv_path], progress=False)
    assert (foreign.paths.prepared / "reviews.parquet").read_text().startswith("not ours")


def test_leftovers_of_a_killed_prepare_are_removed_at_the_next_start(
    tmp_path: Path, csv_path: Path
) -> None:
    settings = settings_for(tmp_path)
    root = settings.paths.root
    root.mkdir(parents=True)
    (root / ".prepared.x1y2.tmp").mkdir()
    (root / ".prepared.x1y2.tmp" / ".ingested.parquet").write_bytes(b"half written")
    (root / ".prepared.old-123").mkdir()
    other = root / ".notes.tmp"  # not prepare's: stays
    other.write_text("keep")
    summary = prepare_run(settings, [csv_path], progress=False)
    hidden = sorted(p.name for p in root.iterdir() if p.name.startswith("."))
    assert hidden == [".lock", ".notes.tmp"]  # the run's write lock (pipeline/locking.py) stays
    assert summary["lines_read"] == 304 and summary["lines"] == {
        "header": 1, "kept": 302, "rejected": 1,
    }  # fmt: skip
