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

This module streams and keeps the books; reading records and parsing a row live in
:mod:`pipeline.data.rows`, deciding encodings in :mod:`pipeline.data.encodings`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.data.encodings import normalise_encoding
from pipeline.data.rows import (
    Plan,
    Record,
    Reject,
    is_blank,
    open_text,
    parse_date,
    parse_like,
    parse_row,
    plan_file,
    printable_raw,
    read_header,
    read_records,
    show_text,
    text_key,
)
from pipeline.errors import DatasetError

log = logging.getLogger(__name__)

DEMO_PREFIX = "demo_reviews"  # pipeline/demo.py writes data/generated/demo_reviews.csv

REJECT_MEANINGS = {  # every reason a row is rejected for, in the order of the checks
    "field_too_long": "a field longer than the CSV reader's limit",
    "malformed_row": "a row the CSV reader could not parse",
    "invalid_encoding": "bytes that are neither UTF-8 nor GB18030",
    "merged_rows": "two reviews run together by a broken quote",
    "wrong_column_count": "more or fewer fields than the header",
    "missing_film": "no film name",
    "missing_star": "no star rating",
    "star_out_of_range": "a star that is not 1 to 5",
    "empty_comment": "nothing left of the comment after cleaning",
}
REJECT_REASONS = tuple(REJECT_MEANINGS)


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
                    ", ".join(show_text(p.name + ("/" if p.is_dir() else "")) for p in skipped[:10])
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
        plan = plan_file(path, forced)
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

    def read_file(self, path: Path, plan: Plan, delimiter: str, positions: dict[str, int]) -> None:
        file_stats = FileStats(path=str(path), encoding=plan.encoding, delimiter=delimiter)
        self.stats.files.append(file_stats)
        bar_start = self.bar.n
        with open_text(path, plan) as f:
            records = read_records(f, plan, delimiter)
            n_columns = 0
            for record in records:  # blank lines before the header, then the header
                if is_blank(record):
                    file_stats.blank_lines += record.lines
                    file_stats.lines["blank"] += record.lines
                    continue
                n_columns = len(record.fields or ())
                file_stats.header_lines = record.lines
                file_stats.lines["header"] += record.lines
                break
            row_number = 0
            for record in records:
                if is_blank(record):
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
        record: Record,
        n_columns: int,
        positions: dict[str, int],
        source: str,
        row_number: int,
        file_stats: FileStats,
    ) -> None:
        file_stats.rows_read += 1
        if record.encoding is not None:
            file_stats.row_encodings[record.encoding] += 1
        review = parse_row(record, n_columns, positions, file_stats.delimiter)
        if isinstance(review, Reject):
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
                printable_raw(record.raw),
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
            parse_date(fields[date_pos]) if date_pos is not None else None,
            star,
            parse_like(fields[like_pos]) if like_pos is not None else None,
            fields[positions["comment"]],
            text,
            (fields[positions["source"]].strip() or source) if "source" in positions else source,
            row_number,
            text_key(text),
        )
