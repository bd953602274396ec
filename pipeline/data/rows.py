"""Reading a review file record by record and parsing each row: the file's plan (text codec,
or bytes decoded per row), CSV records with the physical lines they span, the header's column
positions, and one row's film, star, date, likes and cleaned comment, or the reason it is
rejected. :mod:`pipeline.data.ingest` streams the records through these and keeps the books."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.data.encodings import (
    BYTE_ENCODINGS,
    ESCAPE,
    ESCAPED_BYTE,
    choose_encoding,
    detect_encoding,
)
from pipeline.data.text import clean_name, clean_text
from pipeline.errors import DatasetError

DELIMITERS = (",", ";", "\t", "|")  # tried in this order on the header
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
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


def show_text(text: str, limit: int = 60) -> str:
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
    shown = ", ".join(show_text(h, 40) for h in header[:12]) or "(none)"
    if len(header) > 12:
        shown += f" and {len(header) - 12} more"
    twice = [
        f"{col} (columns {', '.join(str(i + 1) for i in found[_normalise_header(col)])}: "
        f"{', '.join(repr(show_text(header[i], 40)) for i in found[_normalise_header(col)])})"
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


class Reject(NamedTuple):
    reason: str
    detail: str


@dataclass
class Record:
    fields: list[str] | None  # None when the row cannot be used (see reason)
    raw: str  # decoded text of the row; undecodable bytes as U+DC00 + byte
    line: int  # first physical line
    lines: int  # physical lines spanned
    reason: str | None = None  # field_too_long, malformed_row or invalid_encoding
    encoding: str | None = None  # what the row was decoded with (None: ASCII only)


@dataclass(frozen=True)
class Plan:
    """How to read one file: the text codec, and for byte files the forced row encoding."""

    encoding: str  # reported
    skip: int  # BOM bytes
    codec: str  # the TextIOWrapper codec: latin-1 for byte files (decoded per row)
    forced: str | None  # byte files: decode every row with this one

    @property
    def per_row(self) -> bool:
        return self.codec == "latin-1"


def plan_file(path: Path, forced: str | None) -> Plan:
    with open(path, "rb") as f:
        head = f.read(len(codecs.BOM_UTF8))
    encoding = forced or detect_encoding(path)
    if encoding not in (*BYTE_ENCODINGS, "utf-8-sig"):  # UTF-16/32, or one the user named
        return Plan(encoding, 0, encoding, None)
    skip = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    row_encoding = "gb18030" if encoding == "gb18030" else "utf-8"
    return Plan(encoding, skip, "latin-1", row_encoding if forced else None)


def read_records(f: Any, plan: Plan, delimiter: str) -> Iterator[Record]:
    """One :class:`Record` per CSV record, decoded, with the physical lines it spans."""
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


def _decode(fields: list[str] | None, raw: str, plan: Plan, line: int, lines: int) -> Record:
    if not plan.per_row:
        bad = ESCAPED_BYTE.search(raw) is not None
        reason = "invalid_encoding" if bad else None
        return Record(None if bad else fields, raw, line, lines, reason, plan.encoding)
    if raw.isascii():
        return Record(fields, raw, line, lines)
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
        return Record(None, data.decode("utf-8", ESCAPE), line, lines, "invalid_encoding")
    return Record(decoded, text, line, lines, None, encoding)


def parse_star(value: str) -> int | str:
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


def parse_like(value: str) -> int | None:
    try:
        like = int(float(value))
    except (ValueError, OverflowError):
        return None
    return like if abs(like) < 2**63 else None


def parse_date(value: str) -> str | None:
    m = _DATE.search(value)
    if m is None:
        return None
    year, month, day = m.groups()
    return f"{year}-{int(month):02d}-{int(day):02d}"


def text_key(text: str) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def printable_raw(raw: str) -> str:
    """Raw text with undecodable bytes shown as ``\\xNN`` (parquet strings must be valid)."""
    return ESCAPED_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", raw.rstrip("\r\n"))


def open_text(path: Path, plan: Plan) -> io.TextIOWrapper:
    binary = open(path, "rb")  # noqa: SIM115 - the wrapper owns and closes it
    binary.seek(plan.skip)
    return io.TextIOWrapper(binary, encoding=plan.codec, errors=ESCAPE, newline="")


def is_blank(record: Record) -> bool:
    return record.fields is not None and not "".join(record.fields).strip()


def read_header(path: Path, plan: Plan) -> tuple[str, list[str], dict[str, int]]:
    """(delimiter, header, column positions): the first non-blank record, split on the first of
    :data:`DELIMITERS` that yields the required columns (a ``;`` or tab file reads as well)."""
    with open_text(path, plan) as f:
        header = next((r for r in read_records(f, plan, ",") if not is_blank(r)), None)
    if header is None:
        raise DatasetError(f"{path} is empty; expected a CSV with a DMSC-format header")
    fields = header.fields or [printable_raw(header.raw)]
    for delimiter in DELIMITERS[1:]:
        if len(fields) == 1 and delimiter in fields[0]:
            split = next(csv.reader([header.raw.rstrip("\r\n")], delimiter=delimiter))
            try:
                return delimiter, split, column_positions(split, str(path))
            except DatasetError:
                continue
    return ",", fields, column_positions(fields, str(path))


def _lines_text(first: int, count: int) -> str:
    return f"line {first}" if count == 1 else f"lines {first}-{first + count - 1}"


def _swallowed_rows(
    record: Record, n_columns: int, positions: dict[str, int], delimiter: str
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
        if film and isinstance(parse_star(fields[star_pos]), int):
            found.append(record.line + offset)
    return found


def parse_row(
    record: Record, n_columns: int, positions: dict[str, int], delimiter: str
) -> Reject | tuple[str, str | None, str | None, int, str]:
    """(film, film_en, film_cn, star, cleaned text), or why the row is rejected."""
    where = _lines_text(record.line, record.lines)
    if record.reason == "field_too_long":
        limit = csv.field_size_limit()
        return Reject(record.reason, f"a field on {where} is longer than the {limit:,}-byte limit")
    if record.reason == "malformed_row":
        return Reject(record.reason, f"the CSV parser could not read {where}")
    if record.reason == "invalid_encoding":
        return Reject(record.reason, f"{where}: bytes that are neither valid UTF-8 nor GB18030")
    fields = record.fields
    assert fields is not None
    if record.lines > 1:
        swallowed = _swallowed_rows(record, n_columns, positions, delimiter)
        if swallowed:
            return Reject(
                "merged_rows",
                f"a quoted field runs over {where}, and line(s) "
                f"{', '.join(map(str, swallowed[:10]))}{' ...' if len(swallowed) > 10 else ''} "
                "look like rows of their own (a stray quote?)",
            )
    if len(fields) != n_columns:
        return Reject("wrong_column_count", f"{len(fields)} fields, the header has {n_columns}")
    en_pos, cn_pos = positions.get("film_en"), positions.get("film_cn")
    film_en = (clean_name(fields[en_pos]) or None) if en_pos is not None else None
    film_cn = (clean_name(fields[cn_pos]) or None) if cn_pos is not None else None
    film = film_cn or film_en
    if film is None:
        return Reject("missing_film", "no film name (Movie_Name_CN / Movie_Name_EN are empty)")
    star = parse_star(fields[positions["star"]])
    if isinstance(star, str):
        return Reject(star, f"Star is {show_text(fields[positions['star']], 20)!r}, expected 1..5")
    text = clean_text(fields[positions["comment"]])
    if not text:
        return Reject("empty_comment", "nothing left of the comment after cleaning")
    return film, film_en, film_cn, star, text
