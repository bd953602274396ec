"""Ingest DMSC-format CSVs: stream, validate, clean and deduplicate reviews.

The Kaggle DMSC.csv has 2.1M rows (390 MB), so nothing here holds the file as Python objects:
records stream through the ``csv`` module (which parses quoted comments with embedded newlines
and quotes correctly) and leave chunk by chunk into a parquet file. Every data record ends up in
exactly one place: kept, dropped as a duplicate (same film, cleaned text and star; counted), or
rejected into ``rejects.parquet`` with its source, row number, reason and raw text, so
``rows_read == kept + duplicates + sum(rejected)`` always holds.

Rows are numbered 1.. over the data records of each file (the header is not a row; a quoted
comment spanning several lines is one row). A row is checked in this order and rejected for the
first failure: ``malformed_row`` (the CSV parser gave up), ``invalid_encoding`` (bytes that are
not valid in the file's encoding; never silently replaced), ``wrong_column_count``,
``missing_film``, ``missing_star``, ``star_out_of_range`` (not an integer 1..5; ``4.0`` is fine),
``empty_comment`` (nothing left after cleaning). Blank lines are not rows; they are counted.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.data.text import clean_text
from pipeline.errors import InputError

ENCODINGS = ("utf-8", "utf-8-sig", "gb18030")
SNIFF_BYTES = 4 << 20
DEMO_PREFIX = "demo_reviews"  # pipeline/demo.py writes data/generated/demo_reviews.csv

# canonical column -> key used below; matching is case-insensitive and ignores spaces
COLUMNS = {
    "Movie_Name_EN": "film_en",
    "Movie_Name_CN": "film_cn",
    "Date": "date",
    "Star": "star",
    "Comment": "comment",
    "Like": "like",
}
REJECT_REASONS = (
    "malformed_row",
    "invalid_encoding",
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
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # undecodable bytes under surrogateescape
_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")


class DatasetError(InputError):
    """The input cannot be ingested as it is (missing columns, no usable rows, bad path)."""


@dataclass
class FileStats:
    path: str
    encoding: str
    rows_read: int = 0
    kept: int = 0
    duplicates: int = 0
    blank_lines: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass
class IngestStats:
    """What ingest saw; the numbers add up: rows_read == kept + duplicates + sum(rejected)."""

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
    def rejected(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.rejected)
        return {reason: total[reason] for reason in REJECT_REASONS if total[reason]}


def resolve_inputs(inputs: list[Path]) -> list[Path]:
    """CSV files from files and directories (every ``*.csv`` inside, sorted)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(item.glob("*.csv"))
            if not found:
                raise DatasetError(f"directory {item} contains no .csv files")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise DatasetError(f"input {item} does not exist; pass a DMSC-format CSV or a folder")
    if not files:
        raise DatasetError("no input given; pass --input path/to/DMSC.csv")
    return files


def is_demo_input(path: Path) -> bool:
    """True for the generated demo corpus (pipeline/demo.py), whose file name is the marker."""
    return Path(path).name.startswith(DEMO_PREFIX)


def detect_encoding(path: Path, sniff_bytes: int = SNIFF_BYTES) -> str:
    """``utf-8-sig`` with a BOM; ``utf-8`` when the first MBs are (almost all) valid UTF-8, so a
    few corrupt bytes become ``invalid_encoding`` rejects; otherwise ``gb18030``."""
    with open(path, "rb") as f:
        head = f.read(sniff_bytes)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    decoded = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape").decode(head)
    bad = len(_ESCAPED_BYTE.findall(decoded))
    non_ascii = sum(1 for c in decoded if ord(c) > 127)
    return "utf-8" if bad <= max(3, non_ascii // 1000) else "gb18030"


def _normalise_encoding(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name  # utf8 -> utf-8, GB18030 -> gb18030
    except LookupError:
        name = encoding
    if name not in ENCODINGS:
        raise DatasetError(f"unsupported encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    return name


def _normalise_header(name: str) -> str:
    return name.strip().lstrip("\ufeff").replace(" ", "").lower()


def column_positions(header: list[str], source: str) -> dict[str, int]:
    """Position of each known column; a clear error when a required one is missing."""
    found = {_normalise_header(h): i for i, h in enumerate(header)}
    positions = {
        key: found[_normalise_header(col)]
        for col, key in COLUMNS.items()
        if _normalise_header(col) in found
    }
    missing = [c for c in ("Star", "Comment") if COLUMNS[c] not in positions]
    if "film_en" not in positions and "film_cn" not in positions:
        missing.insert(0, "Movie_Name_EN or Movie_Name_CN")
    if missing:
        raise DatasetError(
            f"{source}: missing required column(s) {', '.join(missing)}; found columns "
            f"{', '.join(header) or '(none)'}. Expected a DMSC-format CSV "
            f"(header like {','.join(COLUMNS)})."
        )
    return positions


def _records(f: Any) -> Iterator[tuple[list[str] | None, str]]:
    """(fields, raw text) per CSV record; fields is None when the parser gave up on it."""
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in f:
            consumed.append(line)
            yield line

    reader = csv.reader(lines())
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:
            fields = None
        raw = "".join(consumed)
        consumed.clear()
        yield fields, raw


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
    return _ESCAPED_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", raw.rstrip("\r\n"))


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


def _open_csv(path: Path, encoding: str) -> Any:
    # surrogateescape: undecodable bytes survive as markers, so the row can be rejected
    return open(path, encoding=encoding, errors="surrogateescape", newline="")


def read_header(path: Path, encoding: str) -> list[str]:
    with _open_csv(path, encoding) as f:
        for fields, _raw in _records(f):
            if fields:
                return fields
    raise DatasetError(f"{path} is empty; expected a CSV with a DMSC-format header")


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
    forced = _normalise_encoding(encoding) if encoding else None
    files = resolve_inputs(inputs)
    plan = []
    for path in files:  # check every header before writing anything
        enc = forced or detect_encoding(path)
        plan.append((path, enc, column_positions(read_header(path, enc), str(path))))

    total_bytes = sum(p.stat().st_size for p in files)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="reading", disable=not progress)
    ingester = _Ingester(
        _ChunkWriter(reviews_path, INGEST_SCHEMA, chunk_rows),
        _ChunkWriter(rejects_path, REJECT_SCHEMA, chunk_rows),
        bar,
    )
    try:
        for path, enc, positions in plan:
            ingester.read_file(path, enc, positions)
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

    def read_file(self, path: Path, encoding: str, positions: dict[str, int]) -> None:
        file_stats = FileStats(path=str(path), encoding=encoding)
        self.stats.files.append(file_stats)
        bar_start = self.bar.n
        with _open_csv(path, encoding) as f:
            records = _records(f)
            header: list[str] | None = None
            for header, _raw in records:  # skip blank lines before the header
                if header:
                    break
            row_number = 0
            for fields, raw in records:
                if fields == []:
                    file_stats.blank_lines += 1
                    continue
                row_number += 1
                self._add(
                    fields, raw, len(header or []), positions, path.name, row_number, file_stats
                )
                if row_number % 10_000 == 0:
                    self.bar.update(bar_start + f.buffer.tell() - self.bar.n)
        self.bar.update(bar_start + path.stat().st_size - self.bar.n)

    def _add(
        self,
        fields: list[str] | None,
        raw: str,
        n_columns: int,
        positions: dict[str, int],
        source: str,
        row_number: int,
        file_stats: FileStats,
    ) -> None:
        file_stats.rows_read += 1
        review = _parse_row(fields, raw, n_columns, positions)
        if isinstance(review, str):
            file_stats.rejected[review] += 1
            self.rejects.add(source, row_number, review, _printable_raw(raw))
            return
        film, film_en, film_cn, star, text = review
        digest = hashlib.blake2b(f"{film}\x1f{text}\x1f{star}".encode(), digest_size=8).digest()
        if digest in self.seen:
            file_stats.duplicates += 1
            return
        self.seen.add(digest)
        file_stats.kept += 1
        self.stats.stars[star] += 1
        film_entry = self.stats.films.setdefault(film, {"en": film_en, "cn": film_cn, "reviews": 0})
        film_entry["reviews"] += 1
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
            source,
            row_number,
            _text_key(text),
        )


def _parse_row(
    fields: list[str] | None, raw: str, n_columns: int, positions: dict[str, int]
) -> str | tuple[str, str | None, str | None, int, str]:
    """(film, film_en, film_cn, star, cleaned text) or the reject reason."""
    if fields is None:
        return "malformed_row"
    if _ESCAPED_BYTE.search(raw):
        return "invalid_encoding"
    if len(fields) != n_columns:
        return "wrong_column_count"
    en_pos, cn_pos = positions.get("film_en"), positions.get("film_cn")
    film_en = (fields[en_pos].strip() or None) if en_pos is not None else None
    film_cn = (fields[cn_pos].strip() or None) if cn_pos is not None else None
    film = film_cn or film_en
    if film is None:
        return "missing_film"
    star = _parse_star(fields[positions["star"]])
    if isinstance(star, str):
        return star
    text = clean_text(fields[positions["comment"]])
    if not text:
        return "empty_comment"
    return film, film_en, film_cn, star, text
