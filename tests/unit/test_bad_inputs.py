"""The bad-input corpus: every kind of broken CSV a careless user or an attacker hands to
``prepare``, generated here (no data files committed). For each: no traceback, an error or reject
reason that names the problem, and the books balance: rows read = kept + duplicates + rejected,
and every physical line is the header's, a blank one or part of a row. A sample goes through the
real ``douban prepare`` CLI; property-based cases (hypothesis) add random bytes, random CSV
dialects and random quoting."""

from __future__ import annotations

import codecs
import csv
import io
import os
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.encodings import ESCAPE, TEXT_ENCODINGS
from pipeline.data.ingest import REJECT_REASONS, IngestStats, ingest
from pipeline.errors import DatasetError

HEADER = ["Movie_Name_EN", "Movie_Name_CN", "Date", "Star", "Comment", "Like"]
FILMS = [("Iron Man", "钢铁侠1"), ("The Great Wall", "长城")]


def rows(n: int = 30, tag: str = "评") -> list[list[str]]:
    return [
        [
            *FILMS[i % 2],
            f"2016-01-{1 + i % 28:02d}",
            str(1 + i % 5),
            f"第{i}条{tag}论，特效不错",
            str(i),
        ]
        for i in range(n)
    ]


def csv_text(body: list[list[str]], header: list[str] = HEADER, **fmt: Any) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=fmt.pop("lineterminator", "\n"), **fmt).writerows(
        [header, *body]
    )
    return out.getvalue()


def physical_lines(data: str | bytes) -> int:
    """Lines as an editor counts them (CR, LF or CRLF ends one), counted apart from ingest."""
    breaks = re.findall(r"\r\n|\r|\n" if isinstance(data, str) else rb"\r\n|\r|\n", data)
    ends_open = bool(data) and data[-1:] not in ("\n", "\r", b"\n", b"\r")
    return len(breaks) + ends_open


@dataclass
class Case:
    data: bytes
    text: str | None = None  # the text before encoding: lines are counted on it
    error: str | None = None  # regex the error message must match
    kept: int | None = None
    rejected: dict[str, int] | None = None
    films: list[str] | None = None
    encoding: str | None = None
    detail: str | None = None  # regex one reject's detail must match
    extra: dict[str, Any] = field(default_factory=dict)


def text_case(text: str, codec: str = "utf-8", **kw: Any) -> Case:
    return Case(text.encode(codec), text=text, **kw)


def _garbage(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n))


def _scattered(data: bytes, share: float, seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    start = data.index(b"\n") + 1
    for i in rng.sample(range(start, len(out)), int(len(out) * share)):
        out[i] = rng.choice(b"\x80\xff\xfe\xc0")  # never valid where they land
    return bytes(out)


def _stray_quote(body: str) -> str:
    lines = body.splitlines(keepends=True)
    lines[6] = lines[6].replace("第5条", '"第5条')  # opens a quote on line 7 ...
    lines[11] = lines[11].replace("特效不错,", '特效不错",')  # ... that line 12 closes
    return "".join(lines)


GOOD = csv_text(rows())
CASES: dict[str, Case] = {
    "empty_file": Case(b"", error="is empty"),
    "only_blank_lines": Case(b"\n\n \n", error="is empty"),
    "header_only": text_case(",".join(HEADER) + "\n", kept=0, rejected={}),
    "utf8_bom": Case(codecs.BOM_UTF8 + GOOD.encode(), text=GOOD, kept=30, encoding="utf-8-sig"),
    "utf16_bom": text_case(GOOD, "utf-16", kept=30, encoding="utf-16"),
    "utf16le_no_bom": text_case(GOOD, "utf-16-le", kept=30, encoding="utf-16-le"),
    "utf16be_no_bom": text_case(GOOD, "utf-16-be", kept=30, encoding="utf-16-be"),
    "utf32_bom": text_case(GOOD, "utf-32", kept=30, encoding="utf-32"),
    "utf32le_no_bom": text_case(GOOD, "utf-32-le", kept=30, encoding="utf-32-le"),
    "gb18030": text_case(GOOD, "gb18030", kept=30, encoding="gb18030"),
    "mixed_utf8_gb18030": Case(
        GOOD.encode() + csv_text(rows(20, "影"))[len(",".join(HEADER)) + 1 :].encode("gb18030"),
        kept=50,
        rejected={},
        encoding="utf-8+gb18030",
    ),
    "gb18030_rows_after_70kb_of_ascii": Case(  # the encoding guess sees ASCII only
        csv_text([["A", "B", "", "5", f"good {i}", ""] for i in range(3500)] + rows()).encode(
            "gb18030"
        ),
        kept=3530,
        films=["B", "钢铁侠1", "长城"],
        encoding="gb18030",
    ),
    "garbage_kilobytes_inside": Case(
        GOOD.encode()[:300] + _garbage(4000, 1) + b"\n" + GOOD.encode()[300:],
        kept=None,
        encoding="utf-8",
        extra={"kept_at_least": 27, "reason": "invalid_encoding"},
    ),
    "scattered_bad_bytes": Case(
        _scattered(csv_text(rows(600)).encode(), 0.003, 2),
        encoding="utf-8",
        extra={"kept_at_least": 400, "reason": "invalid_encoding"},
    ),
    "binary_garbage": Case(_garbage(3000, 3), error="missing required column"),
    "png_bytes": Case(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + _garbage(500, 4), error="missing"),
    "gzip_bytes": Case(b"\x1f\x8b\x08\x00" + _garbage(800, 5), error="missing required column"),
    "nul_bytes_in_comments": Case(GOOD.encode().replace("特效".encode(), b"\x00\x00"), kept=30),
    "nul_in_film_name": text_case(GOOD.replace("钢铁侠1", "钢铁\x00侠1", 5), kept=30),
    "control_chars_in_film_name": text_case(
        GOOD.replace("长城", "长\u200b城\x07", 4).replace("钢铁侠1", "钢铁侠1\x1b", 2),
        kept=30,
        films=["钢铁侠1", "长城"],
    ),
    "duplicate_star_column": text_case(
        csv_text(rows(), [*HEADER[:5], "Star"]), error=r"duplicate .*Star \(columns 4, 6"
    ),
    "ambiguous_star_column": text_case(
        csv_text(rows(), [*HEADER[:5], " STAR "]), error=r"ambiguous .*Star.*' STAR '"
    ),
    "duplicate_comment_column": text_case(
        csv_text([[*r, "x"] for r in rows()], [*HEADER, "comment"]), error="Comment"
    ),
    "duplicate_film_column": text_case(
        csv_text(rows(), ["Movie_Name_CN", *HEADER[1:]]), error="Movie_Name_CN"
    ),
    "missing_columns": text_case("Name,Rating\nA,5\n", error=r"Movie_Name_EN or .*Star.*Comment"),
    "missing_star_column": text_case(
        csv_text([r[:3] + r[4:] for r in rows()], HEADER[:3] + HEADER[4:]), error="Star"
    ),
    "header_case_and_spaces": text_case(
        csv_text(rows(), ["movie_name_en", " Movie Name CN", "DATE", "star", "COMMENT", "like"]),
        kept=30,
    ),
    "unknown_extra_columns": text_case(
        csv_text([[*r, "u"] for r in rows()], [*HEADER, "Username"]), kept=30
    ),
    "only_english_film_column": text_case(
        csv_text([[r[0], *r[2:]] for r in rows()], [HEADER[0], *HEADER[2:]]),
        kept=30,
        films=["Iron Man", "The Great Wall"],
    ),
    "stray_quote_merges_rows": text_case(
        _stray_quote(GOOD),
        kept=24,
        rejected={"merged_rows": 1},
        detail=r"lines 7-12, and line\(s\) 8, 9, 10, 11, 12 look like rows",
    ),
    "stray_quote_to_end_of_file": text_case(
        GOOD.replace("第25条", '"第25条'), kept=25, rejected={"merged_rows": 1}
    ),
    "stray_quote_in_semicolon_file": text_case(
        _stray_quote(csv_text(rows(), delimiter=";")), kept=5, rejected={"merged_rows": 1}
    ),
    "crlf_line_ends": text_case(GOOD.replace("\n", "\r\n"), kept=30),
    "cr_line_ends": text_case(GOOD.replace("\n", "\r"), kept=30),
    "mixed_line_ends": text_case(
        "".join(
            line.rstrip("\n") + ("\r\n", "\r", "\n")[i % 3]
            for i, line in enumerate(GOOD.splitlines(keepends=True))
        ),
        kept=30,
    ),
    "no_final_newline": text_case(GOOD.rstrip("\n"), kept=30),
    "huge_field": text_case(
        csv_text([*rows(3), ["A", "甲", "", "5", "长" * 200_000, ""]]),
        kept=3,
        rejected={"field_too_long": 1},
        detail="longer than the 131,072-byte limit",
    ),
    "stars_out_of_range": text_case(
        csv_text([["A", "甲", "", s, f"星{s}", ""] for s in ("0", "6", "-1", "10", "1e9")]),
        kept=0,
        rejected={"star_out_of_range": 5},
        detail="Star is '0', expected 1..5",
    ),
    "star_4_point_0": text_case(csv_text([["A", "甲", "", "4.0", "四星", ""]]), kept=1),
    "star_chinese_numeral": text_case(
        csv_text([["A", "甲", "", "五", "五星", ""]]), kept=0, rejected={"star_out_of_range": 1}
    ),
    "star_fraction_nan_inf": text_case(
        csv_text([["A", "甲", "", s, s, ""] for s in ("4.5", "nan", "inf", "3星")]),
        kept=0,
        rejected={"star_out_of_range": 4},
    ),
    "star_missing": text_case(
        csv_text([["A", "甲", "", " ", "无星", ""]]), kept=0, rejected={"missing_star": 1}
    ),
    "blank_lines_between_rows": text_case(GOOD.replace("\n", "\n\n", 10), kept=30),
    "whitespace_only_lines": text_case(GOOD.replace("\n", "\n   \n", 5), kept=30),
    "semicolon_dialect": text_case(csv_text(rows(), delimiter=";"), kept=30),
    "tab_dialect": text_case(csv_text(rows(), delimiter="\t"), kept=30),
    "pipe_dialect": text_case(csv_text(rows(), delimiter="|"), kept=30),
    "wrong_column_counts": text_case(
        csv_text([*rows(5), ["A", "甲", "", "5"], ["A", "甲", "", "5", "多", "1", "x"]]),
        kept=5,
        rejected={"wrong_column_count": 2},
        detail="4 fields, the header has 6",
    ),
    "missing_film": text_case(
        csv_text([["", " ", "", "3", "无名", ""]]), kept=0, rejected={"missing_film": 1}
    ),
    "empty_or_html_only_comment": text_case(
        csv_text([["A", "甲", "", "3", c, ""] for c in ("", "  ", "<br/><p></p>", "\u200b")]),
        kept=0,
        rejected={"empty_comment": 4},
    ),
    "duplicates": text_case(GOOD + GOOD[GOOD.index("\n") + 1 :], kept=30, extra={"dups": 30}),
    "quoted_multiline_comment": text_case(
        csv_text([["A", "甲", "", "5", '第一行\n第二行 "引号", 逗号\r\n第三行', ""]]), kept=1
    ),
    "comment_looks_like_csv_on_one_line": text_case(
        csv_text([["A", "甲", "", "5", "A,甲,,5,好", ""]]), kept=1
    ),
    "script_and_markup_in_text": text_case(
        csv_text([["<script>x</script>", "[/red]乙", "", "2", "<img src=x onerror=1>差[/b]", ""]]),
        kept=1,
        films=["[/red]乙"],
    ),
    "long_line_of_commas": text_case(",".join(HEADER) + "\n" + "," * 10_000 + "\n", kept=0),
}


def run_case(case: Case, tmp: Path, name: str = "input.csv") -> tuple[IngestStats, list[dict]]:
    path = tmp / name
    path.write_bytes(case.data)
    stats = ingest([path], tmp / "r.parquet", tmp / "x.parquet", progress=False)
    rejects = pq.read_table(tmp / "x.parquet").to_pylist()
    check_books(stats, rejects, case.text if case.text is not None else case.data)
    return stats, rejects


def check_books(stats: IngestStats, rejects: list[dict], source: str | bytes) -> None:
    """Nothing lost: rows and lines add up, and every reject says what was wrong."""
    (f,) = stats.files
    if isinstance(source, bytes) and f.encoding in TEXT_ENCODINGS:
        source = source.decode(f.encoding, ESCAPE)
    assert f.rows_read == f.kept + f.duplicates + sum(f.rejected.values())
    assert f.lines_read == physical_lines(source)
    assert f.lines_read == sum(f.lines.values())
    assert len(rejects) == sum(f.rejected.values())
    assert f.lines["rejected"] == sum(r["lines"] for r in rejects)
    for r in rejects:
        assert r["reason"] in REJECT_REASONS and r["detail"]
        assert r["line"] >= 1 + f.header_lines and r["lines"] >= 1


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_input_kind(kind: str, tmp_path: Path) -> None:
    case = CASES[kind]
    if case.error is not None:
        with pytest.raises(DatasetError, match=case.error) as err:
            run_case(case, tmp_path)
        assert all(c.isprintable() for c in str(err.value)), "binary leaked into the message"
        return
    stats, rejects = run_case(case, tmp_path)
    if case.kept is not None:
        assert stats.kept == case.kept
    if case.rejected is not None:
        assert stats.rejected == case.rejected
    if case.films is not None:
        assert sorted(stats.films) == sorted(case.films)
    elif stats.kept:
        assert set(stats.films) <= {cn for _, cn in FILMS} | {"甲", "乙"}, "a phantom film"
    if case.encoding is not None:
        assert stats.files[0].encoding_used == case.encoding
    if case.detail is not None:
        assert any(re.search(case.detail, r["detail"]) for r in rejects), rejects
    if "kept_at_least" in case.extra:
        assert stats.kept >= case.extra["kept_at_least"]
        assert set(stats.rejected) == {case.extra["reason"]}
    if "dups" in case.extra:
        assert stats.duplicates == case.extra["dups"]


def test_corpus_has_at_least_40_kinds() -> None:
    assert len(CASES) >= 40


CLI_SAMPLE = [
    ("utf16le_no_bom", 0, "prepared 30 reviews"),
    ("stray_quote_merges_rows", 0, "rejected: two reviews run together by a broken quote"),
    ("duplicate_star_column", 2, r"error: .*duplicate or ambiguous header column\(s\) Star"),
    ("binary_garbage", 2, r"error: .*not a CSV text file"),
    ("header_only", 2, r"error: no usable reviews .*no rows after the header"),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind,code,message", CLI_SAMPLE)
def test_cli_prepare_on_bad_input(kind: str, code: int, message: str, tmp_path: Path) -> None:
    path = tmp_path / f"[red]{kind}[bold].csv"  # a name that is Rich markup: shown as text
    path.write_bytes(CASES[kind].data)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "prepare", "-i", str(path), "--run", "bad",
         "--runs-dir", str(tmp_path / "runs"), "--workers", "1"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in done.stderr + done.stdout
    assert done.returncode == code, done.stderr
    assert re.search(message, " ".join(done.stderr.split())), done.stderr
    if code == 0:
        assert f"encoding of {path.name}" in done.stderr  # the markup was printed, not applied


# property-based cases: random bytes, random dialects, random quoting ---------------------------

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ingest_or_error(data: bytes, source: str | bytes | None = None) -> IngestStats | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            stats, _ = run_case(
                Case(data, text=source if isinstance(source, str) else None), Path(tmp)
            )
        except DatasetError as err:
            assert all(c.isprintable() for c in str(err))
            return None
    return stats


@FAST
@given(st.binary(max_size=3000))
def test_random_bytes_never_crash(data: bytes) -> None:
    ingest_or_error(data)


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes_after_a_good_header_never_crash(data: bytes) -> None:
    stats = ingest_or_error((",".join(HEADER) + "\n").encode() + data)
    assert stats is not None  # the header is fine: every row is accounted for, none raises


cells = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@FAST
@given(
    st.lists(st.tuples(cells, st.integers(0, 6), cells), min_size=1, max_size=12),
    st.sampled_from([",", ";", "\t", "|"]),
    st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_random_dialects_keep_every_valid_row(
    body: list[tuple[str, int, str]], delimiter: str, quoting: int, end: str
) -> None:
    table = [["F", film, "", str(star), comment, ""] for film, star, comment in body]
    text = csv_text(table, delimiter=delimiter, quoting=quoting, lineterminator=end)
    stats = ingest_or_error(text.encode(), text)
    assert stats is not None
    single_line = [r for r in table if not re.search(r"[\r\n]", "".join(r))]
    if len(single_line) == len(table):  # no line breaks inside fields: nothing can merge
        assert stats.rows_read == len(table)


@FAST
@given(st.lists(st.integers(0, 10_000), max_size=6), st.sampled_from(['"', "'", '""']))
def test_random_stray_quotes_never_lose_lines(positions: list[int], quote: str) -> None:
    text = csv_text(rows(40))
    for p in sorted(positions, reverse=True):
        p %= len(text)
        text = text[:p] + quote + text[p:]
    stats = ingest_or_error(text.encode(), text)
    if stats is not None:
        assert stats.rows_read <= 40 + len(positions)
