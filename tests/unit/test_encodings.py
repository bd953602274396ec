"""Encodings decided by how the text reads, never by a silent guess: valid UTF-8 without Chinese
stays as written, and Korean or Japanese bytes are not kept as Chinese mojibake (issue 21)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.data.encodings import _nul_pattern, choose_encoding, normalise_encoding, word_share
from pipeline.data.ingest import ingest
from pipeline.errors import DatasetError

HEADER = ["Movie_Name_EN", "Movie_Name_CN", "Date", "Star", "Comment", "Like"]
KOREAN = [
    "이 영화 정말 재미있어요. 배우들의 연기가 훌륭하고 스토리도 감동적이었습니다.",
    "너무 지루하고 시간 낭비였어요. 결말이 실망스럽네요.",
    "감독의 연출이 뛰어나고 영상미가 아름답습니다. 강력 추천합니다!",
    "음악은 좋았지만 전체적으로 별로입니다. 다시 보고 싶지는 않아요.",
]
JAPANESE = [
    "この映画は本当に面白かったです。俳優の演技が素晴らしい。",
    "とても退屈で時間の無駄でした。結末にがっかりしました。",
    "音楽は良かったけど全体的にはいまいちです。",
    "監督の演出が見事で、映像がとても美しかった。",
]
NOT_CHINESE = ["Очень скучно", "(ノдヽ)", "café très bon, le scénario est génial", "Это шедевр!"]


def write(path: Path, comments: list[str], encoding: str, film_cn: str = "") -> Path:
    out = io.StringIO()
    rows = [
        ["A Film", film_cn, "2016-01-01", str(1 + i % 5), c, "0"] for i, c in enumerate(comments)
    ]
    csv.writer(out, lineterminator="\n").writerows([HEADER, *rows])
    path.write_bytes(out.getvalue().encode(encoding))
    return path


def kept_comments(tmp_path: Path, path: Path, **kw: object) -> list[str]:
    stats = ingest([path], tmp_path / "r.parquet", tmp_path / "x.parquet", progress=False, **kw)
    assert stats.rows_read == stats.kept + stats.duplicates + sum(stats.rejected.values())
    return pq.read_table(tmp_path / "r.parquet").column("comment").to_pylist()


def test_valid_utf8_without_chinese_is_kept_as_written(tmp_path: Path) -> None:
    for text in NOT_CHINESE:  # the row-level decision, before the file-level one
        assert choose_encoding(text.encode("utf-8")) == ("utf-8", text)
    path = write(tmp_path / "ru.csv", NOT_CHINESE, "utf-8")  # no Chinese film name either
    assert kept_comments(tmp_path, path) == NOT_CHINESE


def test_chinese_reads_as_words_and_other_scripts_do_not() -> None:
    share, han = word_share("这部电影的剧情很精彩，演员的表演也非常到位，值得一看")
    assert han > 20 and share > 0.5
    for text, codec in (("".join(KOREAN), "euc-kr"), ("".join(JAPANESE), "shift_jis")):
        share, han = word_share(text.encode(codec).decode("gb18030", errors="replace"))
        assert han > 20 and share < 0.2, codec


@pytest.mark.parametrize(("comments", "codec", "named"), [
    (KOREAN * 3, "euc-kr", "euc_kr"), (JAPANESE * 3, "shift_jis", "shift_jis"),
])  # fmt: skip
def test_korean_and_japanese_files_are_refused_then_read_as_named(
    tmp_path: Path, comments: list[str], codec: str, named: str
) -> None:
    path = write(tmp_path / f"{codec}.csv", comments, codec)
    with pytest.raises(DatasetError, match="neither UTF-8 nor GB18030") as err:
        kept_comments(tmp_path, path)
    assert "--encoding" in str(err.value)
    assert kept_comments(tmp_path, path, encoding=codec) == comments  # exactly as written
    assert normalise_encoding(codec.upper()) == named


def test_an_unknown_encoding_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown encoding 'klingon'"):
        normalise_encoding("klingon")
    with pytest.raises(DatasetError, match="unknown encoding"):
        normalise_encoding("rot13")  # a codec, but not a text encoding


def test_gb18030_chinese_files_still_read(tmp_path: Path) -> None:
    comments = [
        "这部电影的剧情很精彩，演员的表演也非常到位",
        "特效不错但是故事太老套了，看得很无聊",
    ] * 3
    path = write(tmp_path / "gb.csv", comments, "gb18030", film_cn="长城")
    assert kept_comments(tmp_path, path) == comments


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_mostly_chinese_utf16_without_a_bom_is_recognised(tmp_path: Path, codec: str) -> None:
    good = "这部电影的剧情很精彩，演员的表演也非常到位，看完以后久久不能平静，强烈推荐。"
    bad = "特效不错但是故事太老套了，节奏拖沓，结尾也很仓促，整体来说是比较让人失望的。"
    comments = [good * 8 + f"第{i}次看" for i in range(4)] + [
        bad * 8 + f"第{i}遍" for i in range(4)
    ]
    path = write(tmp_path / f"{codec}.csv", comments, codec, film_cn="长城")
    data = path.read_bytes()
    assert _nul_pattern(data) is None  # too few NULs for the NUL-pattern test alone
    assert kept_comments(tmp_path, path) == comments
