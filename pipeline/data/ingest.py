"""Ingest DMSC-format CSVs: stream, validate, clean and deduplicate reviews.

The Kaggle DMSC.csv has 2.1M rows (390 MB), so nothing here holds the file as Python objects:
records stream through the ``csv`` module (which parses quoted comments with embedded newlines
and quotes correctly) and leave chunk by chunk into a parquet file. Every data record ends up in
exactly one place: kept, dropped as a duplicate (same film, cleaned text and star; counted), or
rejected into ``rejects.parquet`` with its source, row and line numbers, reason, detail and raw
text, so ``rows_read == kept + duplicates + sum(rejected)`` always holds, and every physical line
of a file is counted once: as header, blank, or part of a kept, duplicate or rejected row.

Encodings. UTF-16/32 files are recognised by their BOM or, without one, by where their NUL bytes
fall. Every other file is read as bytes: in UTF-8 and GB18030 the bytes that structure a CSV
(``,`` ``"`` CR LF) never occur inside a multibyte character, so records are split on bytes and
each row is decoded on its own. A file that mixes UTF-8 and GB18030 rows keeps both, and a few KB
of garbage or scattered bad bytes reject the rows they touch (``invalid_encoding``), never the
whole file and never silently replaced.

Rows are numbered 1.. over the data records of each file (the header is not a row; a quoted
comment spanning several lines is one row). A row is rejected for the first failure of:
``field_too_long`` (a field beyond the csv module's limit), ``malformed_row`` (the CSV parser
gave up), ``invalid_encoding``, ``merged_rows`` (a quoted field swallowed line breaks followed by
lines that look like rows of their own: a stray quote), ``wrong_column_count``, ``missing_film``,
``missing_star``, ``star_out_of_range`` (not an integer 1..5; ``4.0`` is fine), ``empty_comment``
(nothing left after cleaning). Blank lines are not rows; they are counted.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.data.encodings import (
    BYTE_ENCODINGS,
    ESCAPE,
    ESCAPED_BYTE,
    choose_encoding,
    detect_encoding,
    normalise_encoding,
)
from pipeline.data.text import clean_name, clean_text
from pipeline.errors import DatasetError

log = logging.getLogger(__name__)

DEMO_PREFIX = "demo_reviews"  # pipeline/demo.py writes data/generated/demo_reviews.csv
DELIMITERS = (",", ";", "\t", "|")  # tried in this order on the header

# canonical column -> key used below; matching ignores case, spaces and underscores
COLUMNS = {
    "Movie_Name_EN": "film_en",
    "Movie_Name_CN": "film_cn",
    "Date": "date",
    "Star": "star",
    "Comment": "comment",
    "Like": "like",
    "Source": "source",  # optional: the corpus a row comes from (default: its file name)
}
REJECT_REASONS = (
    "field_too_long",
    "malformed_row",
    "invalid_encoding",
    "merged_rows",
    "wrong_column_count",
    "missing_film",
    "missing_star",
    "star_out_of_range",
    "empty_comment",
)

INGEST_SCHEMA = pa.schema(
    [
        ("film", pa.string()),
        ("film_en", pa.string()),
        ("film_cn", pa.string()),
        ("date", pa.string()),
        ("star", pa.int8()),
        ("like", pa.int64()),
        ("comment", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("row_number", pa.int64()),
        ("text_key", pa.int64()),  # 64-bit hash of text: groups equal texts for the splits
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row_number", pa.int64()),
        ("line", pa.int64()),  # first physical line of the row (the header is line 1 or later)
        ("lines", pa.int64()),  # physical lines the row spans
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")


@dataclass
class FileStats:
    path: str
    encoding: str
    delimiter: str = ","
    rows_read: int = 0
    kept: int = 0
    duplicates: int = 0
    blank_lines: int = 0
    header_lines: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    lines: Counter[str] = field(default_factory=Counter)  # header/blank/kept/duplicate/rejected
    row_encodings: Counter[str] = field(default_factory=Counter)  # rows decoded per encoding

    @property
    def lines_read(self) -> int:
        return sum(self.lines.values())

    @property
    def encoding_used(self) -> str:
        """The encoding(s) rows were decoded with, most rows first (``utf-8+gb18030``)."""
        used = [enc for enc, _ in self.row_encodings.most_common()]
        if not used or used == [self.encoding.removesuffix("-sig")]:
            return self.encoding
        return "+".join(used)


@dataclass
class IngestStats:
    """What ingest saw; the numbers add up: rows_read == kept + duplicates + sum(rejected), and
    lines_read == the lines of the header, blank lines and rows."""

    files: list[FileStats] = field(default_factory=list)
    films: dict[str, dict[str, Any]] = field(default_factory=dict)  # film -> en, cn, reviews
    stars: Counter[int] = field(default_factory=Counter)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def kept(self) -> int:
        return sum(f.kept for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def blank_lines(self) -> int:
        return sum(f.blank_lines for f in self.files)

    @property
    def lines_read(self) -> int:
        return sum(f.lines_read for f in self.files)

    @property
    def lines(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.lines)
        return dict(total)

    @property
    def rejected(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.rejected)
        return {reason: total[reason] for reason in REJECT_REASONS if total[reason]}


def resolve_inputs(inputs: list[Path]) -> list[Path]:
    """CSV files from files and directories (every ``*.csv``, any case, inside; sorted). What a
    directory holds besides is logged as skipped, so nothing is left out without a word."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found, skipped = [], []
            for child in sorted(item.iterdir()):
                is_csv = child.is_file() and child.suffix.lower() == ".csv"
                (found if is_csv else skipped).append(child)
            if skipped:
                log.warning(
                    "%s: skipped %d entries that are not .csv files: %s",
                    item,
                    len(skipped),
                    ", ".join(_show(p.name + ("/" if p.is_dir() else "")) for p in skipped[:10])
                    + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""),
                )
            if not found:
                raise DatasetError(f"directory {item} contains no .csv files")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        elif item.exists():  # a FIFO, a device (/dev/null), a socket: not a file to read twice
            raise DatasetError(
                f"input {item} is not a regular file (a pipe or a device)",
                "save the CSV to a file first; prepare reads it more than once",
            )
        else:
            raise DatasetError(f"input {item} does not exist; pass a DMSC-format CSV or a folder")
    if not files:
        raise DatasetError("no input given; pass --input path/to/DMSC.csv")
    return files


def is_demo_input(path: Path) -> bool:
    """True for the generated demo corpus (pipeline/demo.py), whose file name is the marker."""
    return Path(path).name.startswith(DEMO_PREFIX)


def _show(text: str, limit: int = 60) -> str:
    """``text`` safe to print: control and undecodable characters escaped, long text trimmed."""
    shown = "".join(
        f"\\x{ord(c) - 0xDC00:02x}"
        if 0xDC00 <= ord(c) <= 0xDCFF
        else (c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii"))
        for c in text[: limit + 1]
    )
    return shown[:limit] + "…" if len(shown) > limit else shown


def _normalise_header(name: str) -> str:
    return clean_name(name).replace(" ", "").replace("_", "").lower()


def column_positions(header: list[str], source: str) -> dict[str, int]:
    """Position of each known column; a clear error when a required one is missing or a known
    one appears twice (the last would silently win: every label could change)."""
    found: dict[str, list[int]] = {}
    for i, h in enumerate(header):
        found.setdefault(_normalise_header(h), []).append(i)
    shown = ", ".join(_show(h, 40) for h in header[:12]) or "(none)"
    if len(header) > 12:
        shown += f" and {len(header) - 12} more"
    twice = [
        f"{col} (columns {', '.join(str(i + 1) for i in found[_normalise_header(col)])}: "
        f"{', '.join(repr(_show(header[i], 40)) for i in found[_normalise_header(col)])})"
        for col in COLUMNS
        if len(found.get(_normalise_header(col), [])) > 1
    ]
    if twice:
        raise DatasetError(
            f"{source}: duplicate or ambiguous header column(s) {'; '.join(twice)}; "
            "keep one column of each name"
        )
    positions = {
        key: found[_normalise_header(col)][0]
        for col, key in COLUMNS.items()
        if _normalise_header(col) in found
    }
    missing = [c for c in ("Star", "Comment") if COLUMNS[c] not in positions]
    if "film_en" not in positions and "film_cn" not in positions:
        missing.insert(0, "Movie_Name_EN or Movie_Name_CN")
    if missing:
        binary = sum(not (c.isprintable() or c.isspace()) for c in "".join(header))
        looks = " The first line holds binary data: this is not a CSV text file." if binary else ""
        raise DatasetError(
            f"{source}: missing required column(s) {', '.join(missing)}; found columns "
            f"{shown}.{looks} Expected a DMSC-format CSV (header like {','.join(COLUMNS)})."
        )
    return positions


class _Reject(NamedTuple):
    reason: str
    detail: str


@dataclass
class _Record:
    fields: list[str] | None  # None when the row cannot be used (see reason)
    raw: str  # decoded text of the row; undecodable bytes as U+DC00 + byte
    line: int  # first physical line
    lines: int  # physical lines spanned
    reason: str | None = None  # field_too_long, malformed_row or invalid_encoding
    encoding: str | None = None  # what the row was decoded with (None: ASCII only)


@dataclass(frozen=True)
class _Plan:
    """How to read one file: the text codec, and for byte files the forced row encoding."""

    encoding: str  # reported
    skip: int  # BOM bytes
    codec: str  # the TextIOWrapper codec: latin-1 for byte files (decoded per row)
    forced: str | None  # byte files: decode every row with this one

    @property
    def per_row(self) -> bool:
        return self.codec == "latin-1"


def _plan(path: Path, forced: str | None) -> _Plan:
    with open(path, "rb") as f:
        head = f.read(len(codecs.BOM_UTF8))
    encoding = forced or detect_encoding(path)
    if encoding not in (*BYTE_ENCODINGS, "utf-8-sig"):  # UTF-16/32, or one the user named
        return _Plan(encoding, 0, encoding, None)
    skip = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    row_encoding = "gb18030" if encoding == "gb18030" else "utf-8"
    return _Plan(encoding, skip, "latin-1", row_encoding if forced else None)


def _records(f: Any, plan: _Plan, delimiter: str) -> Iterator[_Record]:
    """One :class:`_Record` per CSV record, decoded, with the physical lines it spans."""
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in f:
            consumed.append(line)
            yield line

    reader = csv.reader(lines(), delimiter=delimiter)
    line_number = 1
    while True:
        reason = None
        try:
            fields: list[str] | None = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            fields = None
            reason = "field_too_long" if "field larger" in str(err) else "malformed_row"
        record = _decode(fields, "".join(consumed), plan, line_number, len(consumed))
        record.reason = reason or record.reason
        consumed.clear()
        line_number += record.lines
        yield record


def _decode(fields: list[str] | None, raw: str, plan: _Plan, line: int, lines: int) -> _Record:
    if not plan.per_row:
        bad = ESCAPED_BYTE.search(raw) is not None
        reason = "invalid_encoding" if bad else None
        return _Record(None if bad else fields, raw, line, lines, reason, plan.encoding)
    if raw.isascii():
        return _Record(fields, raw, line, lines)
    data = raw.encode("latin-1")
    try:
        if plan.forced is not None:
            encoding, text = plan.forced, data.decode(plan.forced)
        elif (chosen := choose_encoding(data)) is not None:
            encoding, text = chosen
        else:
            raise UnicodeError
        decoded = [f.encode("latin-1").decode(encoding) for f in fields] if fields else fields
    except UnicodeError:
        return _Record(None, data.decode("utf-8", ESCAPE), line, lines, "invalid_encoding")
    return _Record(decoded, text, line, lines, None, encoding)


def _parse_star(value: str) -> int | str:
    """The star 1..5, or the reject reason."""
    value = value.strip()
    if not value:
        return "missing_star"
    try:
        star = float(value)
    except ValueError:
        return "star_out_of_range"
    if not math.isfinite(star) or star != int(star) or not 1 <= star <= 5:
        return "star_out_of_range"
    return int(star)


def _parse_like(value: str) -> int | None:
    try:
        like = int(float(value))
    except (ValueError, OverflowError):
        return None
    return like if abs(like) < 2**63 else None


def _parse_date(value: str) -> str | None:
    m = _DATE.search(value)
    if m is None:
        return None
    year, month, day = m.groups()
    return f"{year}-{int(month):02d}-{int(day):02d}"


def _text_key(text: str) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _printable_raw(raw: str) -> str:
    """Raw text with undecodable bytes shown as ``\\xNN`` (parquet strings must be valid)."""
    return ESCAPED_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", raw.rstrip("\r\n"))


class _ChunkWriter:
    """Column buffers that flush to a parquet file every ``chunk_rows`` rows."""

    def __init__(self, path: Path, schema: pa.Schema, chunk_rows: int) -> None:
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.writer = pq.ParquetWriter(path, schema)

    def add(self, *values: Any) -> None:
        for column, value in zip(self.columns.values(), values, strict=True):
            column.append(value)
        if len(self.columns["source"]) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.columns["source"]:
            self.writer.write_table(pa.table(self.columns, schema=self.schema))
            self.columns = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _open(path: Path, plan: _Plan) -> io.TextIOWrapper:
    binary = open(path, "rb")  # noqa: SIM115 - the wrapper owns and closes it
    binary.seek(plan.skip)
    return io.TextIOWrapper(binary, encoding=plan.codec, errors=ESCAPE, newline="")


def _is_blank(record: _Record) -> bool:
    return record.fields is not None and not "".join(record.fields).strip()


def read_header(path: Path, plan: _Plan) -> tuple[str, list[str], dict[str, int]]:
    """(delimiter, header, column positions): the first non-blank record, split on the first of
    :data:`DELIMITERS` that yields the required columns (a ``;`` or tab file reads as well)."""
    with _open(path, plan) as f:
        header = next((r for r in _records(f, plan, ",") if not _is_blank(r)), None)
    if header is None:
        raise DatasetError(f"{path} is empty; expected a CSV with a DMSC-format header")
    fields = header.fields or [_printable_raw(header.raw)]
    for delimiter in DELIMITERS[1:]:
        if len(fields) == 1 and delimiter in fields[0]:
            split = next(csv.reader([header.raw.rstrip("\r\n")], delimiter=delimiter))
            try:
                return delimiter, split, column_positions(split, str(path))
            except DatasetError:
                continue
    return ",", fields, column_positions(fields, str(path))


def ingest(
    inputs: list[Path],
    reviews_path: Path,
    rejects_path: Path,
    encoding: str | None = None,
    chunk_rows: int = 50_000,
    progress: bool = True,
) -> IngestStats:
    """Stream every input into ``reviews_path`` (schema :data:`INGEST_SCHEMA`) and
    ``rejects_path``; memory stays bounded by one chunk plus an 8-byte hash per kept review."""
    forced = normalise_encoding(encoding) if encoding else None
    files = resolve_inputs(inputs)
    plans = []
    for path in files:  # check every header before writing anything
        plan = _plan(path, forced)
        delimiter, _header, positions = read_header(path, plan)
        plans.append((path, plan, delimiter, positions))

    total_bytes = sum(p.stat().st_size for p in files)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="reading", disable=not progress)
    ingester = _Ingester(
        _ChunkWriter(reviews_path, INGEST_SCHEMA, chunk_rows),
        _ChunkWriter(rejects_path, REJECT_SCHEMA, chunk_rows),
        bar,
    )
    try:
        for path, plan, delimiter, positions in plans:
            ingester.read_file(path, plan, delimiter, positions)
    finally:
        bar.close()
        ingester.reviews.close()
        ingester.rejects.close()
    return ingester.stats


class _Ingester:
    """Routes each record to kept, duplicate or rejected, and keeps the counts."""

    def __init__(self, reviews: _ChunkWriter, rejects: _ChunkWriter, bar: tqdm) -> None:
        self.reviews = reviews
        self.rejects = rejects
        self.bar = bar
        self.stats = IngestStats()
        self.seen: set[bytes] = set()  # 8-byte digests of (film, text, star)

    def read_file(self, path: Path, plan: _Plan, delimiter: str, positions: dict[str, int]) -> None:
        file_stats = FileStats(path=str(path), encoding=plan.encoding, delimiter=delimiter)
        self.stats.files.append(file_stats)
        bar_start = self.bar.n
        with _open(path, plan) as f:
            records = _records(f, plan, delimiter)
            n_columns = 0
            for record in records:  # blank lines before the header, then the header
                if _is_blank(record):
                    file_stats.blank_lines += record.lines
                    file_stats.lines["blank"] += record.lines
                    continue
                n_columns = len(record.fields or ())
                file_stats.header_lines = record.lines
                file_stats.lines["header"] += record.lines
                break
            row_number = 0
            for record in records:
                if _is_blank(record):
                    file_stats.blank_lines += record.lines
                    file_stats.lines["blank"] += record.lines
                    continue
                row_number += 1
                self._add(record, n_columns, positions, path.name, row_number, file_stats)
                if row_number % 10_000 == 0:
                    self.bar.update(bar_start + f.buffer.tell() - self.bar.n)
        self.bar.update(bar_start + path.stat().st_size - self.bar.n)

    def _add(
        self,
        record: _Record,
        n_columns: int,
        positions: dict[str, int],
        source: str,
        row_number: int,
        file_stats: FileStats,
    ) -> None:
        file_stats.rows_read += 1
        if record.encoding is not None:
            file_stats.row_encodings[record.encoding] += 1
        review = _parse_row(record, n_columns, positions, file_stats.delimiter)
        if isinstance(review, _Reject):
            reason, detail = review
            file_stats.rejected[reason] += 1
            file_stats.lines["rejected"] += record.lines
            self.rejects.add(
                source,
                row_number,
                record.line,
                record.lines,
                reason,
                detail,
                _printable_raw(record.raw),
            )
            return
        film, film_en, film_cn, star, text = review
        digest = hashlib.blake2b(f"{film}\x1f{text}\x1f{star}".encode(), digest_size=8).digest()
        if digest in self.seen:
            file_stats.duplicates += 1
            file_stats.lines["duplicate"] += record.lines
            return
        self.seen.add(digest)
        file_stats.kept += 1
        file_stats.lines["kept"] += record.lines
        self.stats.stars[star] += 1
        film_entry = self.stats.films.setdefault(film, {"en": film_en, "cn": film_cn, "reviews": 0})
        film_entry["reviews"] += 1
        fields = record.fields
        assert fields is not None
        date_pos, like_pos = positions.get("date"), positions.get("like")
        self.reviews.add(
            film,
            film_en,
            film_cn,
            _parse_date(fields[date_pos]) if date_pos is not None else None,
            star,
            _parse_like(fields[like_pos]) if like_pos is not None else None,
            fields[positions["comment"]],
            text,
            (fields[positions["source"]].strip() or source) if "source" in positions else source,
            row_number,
            _text_key(text),
        )


def _lines_text(first: int, count: int) -> str:
    return f"line {first}" if count == 1 else f"lines {first}-{first + count - 1}"


def _swallowed_rows(
    record: _Record, n_columns: int, positions: dict[str, int], delimiter: str
) -> list[int]:
    """Line numbers inside a multi-line record that look like rows of their own (every column,
    a film and a star 1..5 where the header puts them): what a stray opening quote swallows.
    A last line whose closing quote comes before any delimiter is the record's own end (the
    rest of the comment, then the columns after it: a star and a film when the comment comes
    first), not a swallowed row."""
    found = []
    star_pos = positions["star"]
    film_pos = [p for p in (positions.get("film_cn"), positions.get("film_en")) if p is not None]
    physical = _LINE_BREAK.split(record.raw.rstrip("\r\n"))
    last = physical[-1]
    if delimiter not in last.split('"', 1)[0]:
        physical = physical[:-1]
    for offset, line in enumerate(physical[1:], start=1):
        fields = next(csv.reader([line], delimiter=delimiter), [])
        if len(fields) != n_columns:
            continue
        film = any(clean_name(fields[p]) and len(fields[p]) <= 200 for p in film_pos)
        if film and isinstance(_parse_star(fields[star_pos]), int):
            found.append(record.line + offset)
    return found


def _parse_row(
    record: _Record, n_columns: int, positions: dict[str, int], delimiter: str
) -> _Reject | tuple[str, str | None, str | None, int, str]:
    """(film, film_en, film_cn, star, cleaned text), or why the row is rejected."""
    where = _lines_text(record.line, record.lines)
    if record.reason == "field_too_long":
        limit = csv.field_size_limit()
        return _Reject(record.reason, f"a field on {where} is longer than the {limit:,}-byte limit")
    if record.reason == "malformed_row":
        return _Reject(record.reason, f"the CSV parser could not read {where}")
    if record.reason == "invalid_encoding":
        return _Reject(record.reason, f"{where}: bytes that are neither valid UTF-8 nor GB18030")
    fields = record.fields
    assert fields is not None
    if record.lines > 1:
        swallowed = _swallowed_rows(record, n_columns, positions, delimiter)
        if swallowed:
            return _Reject(
                "merged_rows",
                f"a quoted field runs over {where}, and line(s) "
                f"{', '.join(map(str, swallowed[:10]))}{' ...' if len(swallowed) > 10 else ''} "
                "look like rows of their own (a stray quote?)",
            )
    if len(fields) != n_columns:
        return _Reject("wrong_column_count", f"{len(fields)} fields, the header has {n_columns}")
    en_pos, cn_pos = positions.get("film_en"), positions.get("film_cn")
    film_en = (clean_name(fields[en_pos]) or None) if en_pos is not None else None
    film_cn = (clean_name(fields[cn_pos]) or None) if cn_pos is not None else None
    film = film_cn or film_en
    if film is None:
        return _Reject("missing_film", "no film name (Movie_Name_CN / Movie_Name_EN are empty)")
    star = _parse_star(fields[positions["star"]])
    if isinstance(star, str):
        return _Reject(star, f"Star is {_show(fields[positions['star']], 20)!r}, expected 1..5")
    text = clean_text(fields[positions["comment"]])
    if not text:
        return _Reject("empty_comment", "nothing left of the comment after cleaning")
    return film, film_en, film_cn, star, text
