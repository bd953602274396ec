"""`douban score -i FILE` reads the encodings ingest detects: UTF-8, GB18030 and UTF-16/32 with
or without a byte-order mark (a BOM-less UTF-16 file was decoded as UTF-8: a NUL after every
character, "no review column")."""

from __future__ import annotations

import codecs
import io
import json
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import InputError
from pipeline.predict.files import read_texts

REVIEWS = ["好看，演员很棒", "难看, 浪费时间", "一般般"]
CSV = "id,Comment\n" + "".join(f'{i},"{text}"\n' for i, text in enumerate(REVIEWS))
BOMS = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
        "utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}  # fmt: skip


@pytest.mark.parametrize("bom", [True, False], ids=["bom", "no-bom"])
@pytest.mark.parametrize("encoding", [*BOMS, "gb18030", "utf-8"])
def test_csv_and_txt_decode_in_every_detected_encoding(tmp_path, encoding, bom):
    prefix = BOMS.get(encoding, codecs.BOM_UTF8 if encoding == "utf-8" else b"") if bom else b""
    csv_file, txt_file = tmp_path / "in.csv", tmp_path / "in.txt"
    csv_file.write_bytes(prefix + CSV.encode(encoding))
    # without a BOM, UTF-16/32 shows by the NULs of its ASCII (header, digits, commas): a text
    # of Chinese alone has none, so the lines carry a number as a real list would
    lines = [f"{i}. {text}" for i, text in enumerate(REVIEWS)]
    txt_file.write_bytes(prefix + "\n".join(lines).encode(encoding))
    assert read_texts(csv_file) == REVIEWS
    assert read_texts(txt_file) == lines


def test_a_truncated_utf16_file_keeps_its_whole_rows(tmp_path):
    """An odd byte count (a cut-off copy): the rows before the cut are intact."""
    path = tmp_path / "cut.txt"
    path.write_bytes("\n".join(REVIEWS).encode("utf-16-le")[:-1])
    texts = read_texts(path)
    assert texts[:2] == REVIEWS[:2] and texts[2].startswith(REVIEWS[2][:-1])


@pytest.mark.slow
def test_douban_score_reads_a_utf16_file(demo_run, tmp_path):
    """Through the CLI, as the user runs it on a file saved as "Unicode" by a Windows editor."""
    path = tmp_path / "reviews.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + CSV.encode("utf-16-le"))
    args = ["--run", demo_run.run_name, "--runs-dir", str(demo_run.runs_dir)]
    result = CliRunner().invoke(app, ["score", *args, "--json", "-i", str(path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == REVIEWS
    assert all(r["pred_star"] in range(1, 6) and not r.get("error") for r in records)


def test_txt_and_stdin_lines_end_at_newlines_only(tmp_path, monkeypatch):
    """Form feed, \x1c, NEL and U+2028 inside a review do not split it: 5 lines, 5 records,
    in order, from a .txt file and from stdin (`douban score -i -`) alike."""
    lines = ["第一条\f还是第一条", "第二条\x1c", "第三\x85条", "第四\u2028条", "第五条"]
    data = ("\r\n".join(lines[:2]) + "\n" + "\n".join(lines[2:]) + "\n").encode()
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    assert read_texts(path) == lines
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert read_texts("-") == lines
    path.write_bytes(b"a\n\nb\n")
    assert read_texts(path) == ["a", "", "b"]  # an empty line stays a record (an error one)


def test_a_one_column_csv_without_a_header_keeps_its_first_review(tmp_path):
    headless = tmp_path / "headless.csv"
    headless.write_text("好看，演员很棒\n难看\nGreat movie\n", encoding="utf-8")
    assert read_texts(headless) == ["好看，演员很棒", "难看", "Great movie"]
    named = tmp_path / "named.csv"
    named.write_text("review_text\n好看\n难看\n", encoding="utf-8")  # a column name: a header
    assert read_texts(named) == ["好看", "难看"]


def test_two_review_columns_are_refused_not_picked(tmp_path):
    path = tmp_path / "both.csv"
    path.write_text("comment,Comment\n好看,难看\n", encoding="utf-8")
    with pytest.raises(InputError, match="several review columns"):
        read_texts(path)
