"""Ingest of DMSC-format CSVs (pipeline/data/ingest.py)."""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.data.encodings import detect_encoding
from pipeline.data.ingest import (
    INGEST_SCHEMA,
    IngestStats,
    ingest,
    is_demo_input,
    resolve_inputs,
)
from pipeline.errors import DatasetError

HEADER = ["Movie_Name_EN", "Movie_Name_CN", "Date", "Star", "Comment", "Like"]
FULL_HEADER = [
    "ID", "Movie_Name_EN", "Movie_Name_CN", "Crawl_Date", "Number", "Username", "Date", "Star",
    "Comment", "Like",
]  # fmt: skip


def csv_text(rows: list[list[str]], header: list[str] = HEADER) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER, **kw: str) -> Path:
    path.write_bytes(csv_text(rows, header).encode(kw.get("encoding", "utf-8")))
    return path


def physical_lines(data: bytes) -> int:
    """Lines as a text editor counts them (CR, LF or CRLF ends one), counted apart from ingest."""
    return len(re.findall(rb"\r\n|\r|\n", data)) + (
        not re.search(rb"[\r\n]\Z", data) and data != b""
    )


def run_ingest(tmp_path: Path, inputs: list[Path], **kw: object) -> tuple[IngestStats, list, list]:
    stats = ingest(inputs, tmp_path / "r.parquet", tmp_path / "x.parquet", progress=False, **kw)
    reviews = pq.read_table(tmp_path / "r.parquet").to_pylist()
    rejects = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert stats.rows_read == stats.kept + stats.duplicates + sum(stats.rejected.values())
    assert len(reviews) == stats.kept and len(rejects) == sum(stats.rejected.values())
    for f in stats.files:  # every physical line is the header's, blank, or a row's
        assert f.lines_read == physical_lines(Path(f.path).read_bytes())
        assert f.lines["rejected"] == sum(
            r["lines"] for r in rejects if r["source"] == Path(f.path).name
        )
    return stats, reviews, rejects


def test_each_bad_row_kind_is_rejected_with_its_reason(tmp_path: Path) -> None:
    rows = [
        ["Iron Man", "钢铁侠1", "2008-05-01", "5", "好看", "3"],  # 1 kept
        ["Iron Man", "钢铁侠1", "2008-05-01", "", "没星", "0"],  # 2 missing_star
        ["Iron Man", "钢铁侠1", "2008-05-01", "6", "六星", "0"],  # 3 star_out_of_range
        ["Iron Man", "钢铁侠1", "2008-05-01", "4.5", "半星", "0"],  # 4 star_out_of_range
        ["Iron Man", "钢铁侠1", "2008-05-01", "abc", "字母", "0"],  # 5 star_out_of_range
        ["Iron Man", "钢铁侠1", "2008-05-01", "4.0", "四星", "0"],  # 6 kept (4.0 is 4)
        ["Iron Man", "钢铁侠1", "2008-05-01", "3", "  <br> ", "0"],  # 7 empty_comment
        ["", "", "2008-05-01", "3", "无名", "0"],  # 8 missing_film
        ["Iron Man", "钢铁侠1", "2008-05-01", "3", "多", "0", "extra"],  # 9 wrong_column_count
        ["Iron Man", "钢铁侠1", "3"],  # 10 wrong_column_count
        ["Iron Man", "钢铁侠1", "2008-05-02", "5", " 好看 ", "9"],  # 11 duplicate of 1
        ["Iron Man", "", "2008-05-01", "2", "只有英文名", ""],  # 12 kept, film = EN name
    ]
    stats, reviews, rejects = run_ingest(tmp_path, [write_csv(tmp_path / "a.csv", rows)])
    assert stats.rows_read == 12 and stats.kept == 3 and stats.duplicates == 1
    assert stats.rejected == {
        "wrong_column_count": 2,
        "missing_film": 1,
        "missing_star": 1,
        "star_out_of_range": 3,
        "empty_comment": 1,
    }
    assert {(r["row_number"], r["reason"]) for r in rejects} == {
        (2, "missing_star"), (3, "star_out_of_range"), (4, "star_out_of_range"),
        (5, "star_out_of_range"), (7, "empty_comment"), (8, "missing_film"),
        (9, "wrong_column_count"), (10, "wrong_column_count"),
    }  # fmt: skip
    assert all(r["source"] == "a.csv" for r in rejects)
    assert next(r for r in rejects if r["row_number"] == 3)["raw"] == (
        "Iron Man,钢铁侠1,2008-05-01,6,六星,0"
    )
    assert [(r["row_number"], r["star"], r["film"]) for r in reviews] == [
        (1, 5, "钢铁侠1"), (6, 4, "钢铁侠1"), (12, 2, "Iron Man"),
    ]  # fmt: skip
    assert stats.films == {
        "钢铁侠1": {"en": "Iron Man", "cn": "钢铁侠1", "reviews": 2},
        "Iron Man": {"en": "Iron Man", "cn": None, "reviews": 1},
    }


def test_kept_rows_match_the_ingest_schema(tmp_path: Path) -> None:
    rows = [
        ["Iron Man", "钢铁侠1", "2008/5/7", "5", " 好看！", "12"],
        ["X", "某片", "", "1", "烂", ""],
    ]
    path = write_csv(tmp_path / "a.csv", rows)
    run_ingest(tmp_path, [path])
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.schema.equals(INGEST_SCHEMA)
    first, second = table.to_pylist()
    assert isinstance(first.pop("text_key"), int) and second.pop("text_key") != 0
    assert first == {
        "film": "钢铁侠1", "film_en": "Iron Man", "film_cn": "钢铁侠1", "date": "2008-05-07",
        "star": 5, "like": 12, "comment": " 好看！", "text": "好看!", "source": "a.csv",
        "row_number": 1,
    }  # fmt: skip
    assert second["date"] is None and second["like"] is None


def test_duplicates_need_same_film_text_and_star(tmp_path: Path) -> None:
    rows = [
        ["A", "甲", "", "3", "还行", ""],
        ["A", "甲", "", "3", "还行 ", ""],  # same after cleaning: duplicate
        ["A", "甲", "", "4", "还行", ""],  # other star: kept
        ["B", "乙", "", "3", "还行", ""],  # other film: kept
    ]
    stats, reviews, _ = run_ingest(tmp_path, [write_csv(tmp_path / "a.csv", rows)])
    assert stats.duplicates == 1 and stats.kept == 3
    assert len({r["text_key"] for r in reviews}) == 1  # one text, one key for the splits


def test_embedded_newlines_and_quotes_parse_as_one_row(tmp_path: Path) -> None:
    comment = '第一行\n第二行 "引号", 逗号\r\n第三行'
    rows = [["A", "甲", "", "5", comment, ""], ["A", "甲", "", "1", "下一行", ""]]
    path = write_csv(tmp_path / "a.csv", rows)
    assert path.read_text(encoding="utf-8").count("\n") == 5  # header + 2 rows over 5 lines
    stats, reviews, _ = run_ingest(tmp_path, [path])
    assert stats.rows_read == 2
    assert reviews[0]["comment"] == comment
    assert reviews[0]["text"] == '第一行 第二行 "引号", 逗号 第三行'
    assert [r["row_number"] for r in reviews] == [1, 2]


def test_over_long_field_says_so_and_reading_continues(tmp_path: Path) -> None:
    huge = "长" * 140_000  # beyond the csv module's field size limit
    rows = [
        ["A", "甲", "", "5", "好", ""],
        ["A", "甲", "", "5", huge, ""],
        ["A", "甲", "", "4", "行", ""],
    ]
    stats, reviews, rejects = run_ingest(tmp_path, [write_csv(tmp_path / "a.csv", rows)])
    assert stats.rejected == {"field_too_long": 1}
    assert rejects[0]["row_number"] == 2 and huge in rejects[0]["raw"]
    assert rejects[0]["detail"] == "a field on line 3 is longer than the 131,072-byte limit"
    assert [r["text"] for r in reviews] == ["好", "行"]


def test_blank_lines_are_counted_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(",".join(HEADER) + "\n\nA,甲,,5,好,\n\n\nA,甲,,4,行,\n", encoding="utf-8")
    stats, reviews, _ = run_ingest(tmp_path, [path])
    assert (stats.rows_read, stats.blank_lines) == (2, 3)
    assert [r["row_number"] for r in reviews] == [1, 2]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_each_encoding_is_detected_and_read(tmp_path: Path, encoding: str) -> None:
    rows = [
        ["Iron Man", "钢铁侠1", "2008-05-01", "5", f"第{i}条：特效震撼，钢铁侠帅！", ""]
        for i in range(50)
    ]
    path = write_csv(tmp_path / "a.csv", rows, encoding=encoding)
    assert detect_encoding(path) == encoding
    stats, reviews, _ = run_ingest(tmp_path, [path])
    assert stats.files[0].encoding == encoding and stats.kept == 50
    assert reviews[0]["comment"] == "第0条：特效震撼，钢铁侠帅！"
    assert reviews[0]["film_en"] == "Iron Man"  # the BOM did not stick to the first column


def test_encoding_can_be_forced(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [["A", "甲", "", "5", "好看", ""]], encoding="gb18030")
    _, reviews, _ = run_ingest(tmp_path, [path], encoding="GB18030")
    assert reviews[0]["text"] == "好看"
    with pytest.raises(DatasetError, match="unknown encoding"):
        ingest([path], tmp_path / "r.parquet", tmp_path / "x.parquet", encoding="gb-9999")


def test_invalid_bytes_reject_the_row_not_the_file(tmp_path: Path) -> None:
    good = csv_text([["A", "甲", "", "5", f"好看{i}", ""] for i in range(200)]).encode()
    path = tmp_path / "a.csv"
    path.write_bytes(good + "A,甲,,1,烂".encode() + b"\xff\xfe" + b",\n" + "A,甲,,2,差,\n".encode())
    assert detect_encoding(path) == "utf-8"
    stats, reviews, rejects = run_ingest(tmp_path, [path])
    assert stats.kept == 201 and stats.rejected == {"invalid_encoding": 1}
    assert (rejects[0]["row_number"], rejects[0]["line"]) == (201, 202)
    assert rejects[0]["raw"] == "A,甲,,1,烂\\xff\\xfe,"


def test_full_dmsc_header_and_directory_input(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    row = ["1", "Iron Man", "钢铁侠1", "2017-01-22", "1", "user", "2008-05-01", "5", "好看", "3"]
    write_csv(folder / "b.csv", [row], FULL_HEADER)
    write_csv(folder / "a.csv", [["A", "甲", "", "4", "行", ""]])
    write_csv(folder / "C.CSV", [["C", "丙", "", "3", "中", ""]])
    (folder / "notes.txt").write_text("not a csv")
    (folder / "old").mkdir()
    write_csv(folder / "old" / "d.csv", [["D", "丁", "", "2", "差", ""]])
    with caplog.at_level(logging.WARNING, logger="pipeline.data.ingest"):
        assert [p.name for p in resolve_inputs([folder])] == ["C.CSV", "a.csv", "b.csv"]
    assert "skipped 2 entries that are not .csv files: notes.txt, old/" in caplog.text
    stats, reviews, _ = run_ingest(tmp_path, [folder])
    assert [(r["source"], r["film"], r["like"]) for r in reviews] == [
        ("C.CSV", "丙", None), ("a.csv", "甲", None), ("b.csv", "钢铁侠1", 3),
    ]  # fmt: skip
    assert [f.rows_read for f in stats.files] == [1, 1, 1]


def test_missing_columns_are_one_clear_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [["A", "5"]], header=["Name", "Rating"])
    with pytest.raises(DatasetError) as err:
        ingest([path], tmp_path / "r.parquet", tmp_path / "x.parquet", progress=False)
    message = str(err.value)
    assert "Movie_Name_EN or Movie_Name_CN" in message and "Star" in message
    assert "Comment" in message and "found columns Name, Rating" in message


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_inputs([tmp_path / "missing.csv"])
    with pytest.raises(DatasetError, match="no .csv files"):
        resolve_inputs([tmp_path])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        ingest([empty], tmp_path / "r.parquet", tmp_path / "x.parquet", progress=False)


def test_demo_corpus_is_recognised_by_its_file_name() -> None:
    assert is_demo_input(Path("data/generated/demo_reviews.csv"))
    assert not is_demo_input(Path("data/DMSC.csv"))


def test_multi_line_comments_before_the_star_and_film_columns_are_kept(tmp_path: Path) -> None:
    header = ["Comment", "Star", "Movie_Name_CN", "Movie_Name_EN", "Date", "Like"]
    comments = ["第一行\n第二行，很好看", "开头\n中间\n结尾，特效不错", "一行就够了"]
    rows = [[c, str(4 + i % 2), "长城", "The Great Wall", "2016-01-01", "1"]
            for i, c in enumerate(comments)]  # fmt: skip
    path = write_csv(tmp_path / "comment_first.csv", rows, header=header)
    stats, reviews, rejects = run_ingest(tmp_path, [path])
    assert rejects == [] and stats.kept == 3
    assert [r["comment"] for r in reviews] == comments


def test_a_pipe_or_a_device_is_named_as_such(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "reviews.csv"
    os.mkfifo(fifo)
    for item in (fifo, Path("/dev/null")):
        with pytest.raises(DatasetError, match="not a regular file"):
            resolve_inputs([item])
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_inputs([tmp_path / "missing.csv"])
