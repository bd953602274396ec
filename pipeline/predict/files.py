"""Batch scoring from and to files: CSV, TXT, JSON Lines, Parquet or stdin in; CSV, JSON Lines or
Parquet out.

Inputs are checked before a model is loaded (a missing file or a CSV without a review column is
a one-line :class:`~pipeline.errors.InputError`, not a minute of loading and then a traceback).
Parquet is streamed a row group at a time, in and out, so memory stays flat however long the
file. Output has exactly one record per input row, in order; the Parquet columns are the CSV's
(:data:`PARQUET_SCHEMA`), as the Ray engine writes them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
from tqdm.auto import tqdm

from pipeline.artifacts import atomic_path
from pipeline.errors import InputError, InputNotFoundError
from pipeline.predict.batching import LOOKAHEAD
from pipeline.predict.preprocess import Unreadable
from pipeline.predict.scorer import TEXT_COLUMNS, Scorer
from pipeline.terminal import json_line, printable

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "parquet")
# what the first line of a one-column CSV looks like when it names the column (else it is data)
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,39}")
MAX_FIELD_CHARS = 10_000_000  # a huge review is scored (truncated, with a warning), not refused
# UTF-32 before UTF-16: FF FE 00 00 also starts with FF FE
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"\xef\xbb\xbf", "utf-8"),
)  # fmt: skip


def _decode(data: bytes, encoding: str) -> str:
    """Decode UTF-8 / GB18030 line by line, as ingest decides per row (a guess from a few lines
    fails whole files), the detected encoding first; a line that is neither keeps its bad bytes
    as lone surrogates, so it is reported as such (``error: invalid UTF-8``). A byte-order mark
    wins over the detected encoding; UTF-16/32 without one is what
    :func:`~pipeline.data.ingest.detect_encoding` found by NUL pattern (UTF-16/32 cannot keep
    bad bytes: they become U+FFFD)."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            if codec == "utf-8":
                return _decode_lines(data[len(bom) :], ("utf-8", "gb18030"))
            return data[len(bom) :].decode(codec, errors="replace")
    if encoding.startswith(("utf-16", "utf-32")):
        return data.decode(encoding, errors="replace")
    order = ("gb18030", "utf-8") if encoding == "gb18030" else ("utf-8", "gb18030")
    return _decode_lines(data, order)


def _decode_lines(data: bytes, order: tuple[str, str]) -> str:
    """Line ends are the same bytes in both codecs (and never inside a GB18030 character)."""
    return "".join(_decode_line(line, order) for line in data.splitlines(keepends=True))


def _decode_line(line: bytes, order: tuple[str, str]) -> str:
    for codec in order:
        try:
            return line.decode(codec)
        except UnicodeDecodeError:
            continue
    return line.decode("utf-8", errors="surrogateescape")


def _read_bytes(path: str | Path) -> tuple[bytes, str, str, str]:
    """``(data, suffix, encoding, label)`` of a file or ``-`` (stdin, one review per line)."""
    from pipeline.data.encodings import detect_encoding

    if str(path) == "-":
        return sys.stdin.buffer.read(), ".txt", "utf-8", "stdin"
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(
            f"input file {path} does not exist", "check the path; -i - reads stdin"
        )
    if path.is_dir():
        raise InputError(f"input {path} is a directory", "pass one .csv or .txt file")
    try:
        return path.read_bytes(), path.suffix.lower(), detect_encoding(path), str(path)
    except OSError as err:
        raise InputError(f"cannot read input file {path}: {err.strerror or err}") from err


def review_lines(text: str) -> list[str]:
    """One review per line, lines ending at ``\n`` or ``\r\n`` only: form feeds, ``\x1c``,
    NEL or U+2028 inside a review stay in it (``str.splitlines`` would cut there and shift
    every row number after it); a final newline ends the last line without starting another."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def review_column(names: list[str], label: str) -> str:
    """A table's review column: the first of :data:`TEXT_COLUMNS` (any case), else the only
    column; several candidates or none is a clear error."""
    lowered = [name.strip().lower() for name in names]
    matches = [names[i] for i, name in enumerate(lowered) if name in TEXT_COLUMNS]
    if len(matches) > 1:
        shown = printable(", ".join(matches))
        raise InputError(
            f"{label} has several review columns ({shown})", "keep one, or rename the others"
        )
    if matches:
        return matches[0]
    if len(names) == 1:
        return names[0]
    raise InputError(
        f"{label} has no review column (its columns: {printable(', '.join(names))[:200]})",
        f"name the review column one of {', '.join(TEXT_COLUMNS)}, or pass a .txt file with "
        "one review per line",
    )


class ParquetTexts:
    """The review column of a Parquet file, read a row group at a time when iterated (memory
    stays flat with the file's length); ``len`` is the row count from the footer."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        if not path.is_file():
            raise InputNotFoundError(f"input file {path} does not exist", "check the path")
        try:
            self.file = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"{path} is not a readable Parquet file: {err}") from err
        self.column = review_column(self.file.schema_arrow.names, str(path))

    def __len__(self) -> int:
        return self.file.metadata.num_rows

    def __iter__(self) -> Iterator[Any]:
        for i in range(self.file.num_row_groups):
            yield from self.file.read_row_group(i, columns=[self.column])[0].to_pylist()


def jsonl_text(line: str) -> Any:
    """The review of one JSON Lines line: a JSON string, or an object's review key (any
    case); anything else is :class:`~pipeline.predict.preprocess.Unreadable`."""
    try:
        value = json.loads(line)
    except ValueError:
        return Unreadable(line, "not a JSON line")
    if not isinstance(value, dict):
        return value
    keys = {str(k).strip().lower(): k for k in value}
    key = next((keys[c] for c in TEXT_COLUMNS if c in keys), None)
    if key is None:
        return Unreadable(line, f"no review key ({', '.join(TEXT_COLUMNS)})")
    return value[key]


def read_texts(path: str | Path) -> list[Any] | ParquetTexts:
    """Texts from a ``.csv`` (column comment / text / review / content, any case, or the only
    column: its first line is a header only when it looks like a column name), a ``.jsonl``
    (a JSON object with that key, or a JSON string, per line), a ``.parquet`` (the same
    column, streamed), a ``.txt`` (one review per line) or ``-`` (stdin, one per line). A row
    without the column gives an error record, so rows stay aligned."""
    if str(path) != "-" and Path(path).suffix.lower() == ".parquet":
        return ParquetTexts(Path(path))
    data, suffix, encoding, label = _read_bytes(path)
    text = _decode(data, encoding)
    if suffix == ".jsonl":
        return [jsonl_text(line) for line in review_lines(text)]
    if suffix != ".csv":
        return review_lines(text)
    limit = csv.field_size_limit()
    csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise InputError(f"{label} is not a readable CSV file: {err}", "save it as CSV") from err
    finally:
        csv.field_size_limit(limit)
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    col = header.index(review_column(header, label))
    lowered = header[col].strip().lower()
    if lowered not in TEXT_COLUMNS and not _COLUMN_NAME.fullmatch(lowered):
        log.info("%s: one column without a header: its first line is a review", label)
        body = rows  # a review, not a column name
    return [row[col] if col < len(row) else None for row in body]


def output_format(output: Path | None, as_json: bool) -> str:
    """``csv``, ``jsonl`` or ``parquet`` for ``--output`` / ``--json`` (stdout: csv, or jsonl
    with --json; Parquet only into a file)."""
    suffix = output.suffix.lower().lstrip(".") if output is not None else None
    if output is not None and suffix not in FORMATS:
        raise InputError(
            f"output {output} must end in .csv, .jsonl or .parquet", "rename the output file"
        )
    if as_json and suffix in ("csv", "parquet"):
        raise InputError("--json writes JSON Lines", f"name the output {output.stem}.jsonl")
    return "jsonl" if as_json else suffix or "csv"


def flat_row(record: dict[str, Any], safe: bool) -> dict[str, Any]:
    """A record as one CSV / Parquet row (:data:`CSV_FIELDS`); ``safe`` neutralises terminal
    control sequences in the text."""
    probs = record["probs"] or [None] * 5
    row = {k: record[k] for k in ("row", "text", "pred_star", "expected_star", "regression")}
    row |= {f"prob_{s}": p for s, p in zip(range(1, 6), probs, strict=True)}
    row["model"] = record["model"]
    row["top_words"] = " ".join(f"{w['word']}:{w['weight']:.3f}" for w in record["top_words"])
    row["warnings"] = "; ".join(record["warnings"])
    row["error"] = record["error"] or ""
    if safe:  # a terminal: its escape sequences are not the reviewer's to use
        row["text"], row["top_words"] = printable(row["text"]), printable(row["top_words"])
    return row


CSV_FIELDS = (
    "row", "text", "pred_star", "expected_star", "regression",
    *(f"prob_{s}" for s in range(1, 6)), "model", "top_words", "warnings", "error",
)  # fmt: skip
_TYPES = {"row": pa.int64(), "pred_star": pa.int64()} | {
    name: pa.float64() for name in ("expected_star", "regression", *CSV_FIELDS[5:10])
}
PARQUET_SCHEMA = pa.schema([(name, _TYPES.get(name, pa.string())) for name in CSV_FIELDS])


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def record_writer(out: IO[Any], fmt: str) -> tuple[Callable[[list[dict[str, Any]]], None], Any]:
    """A function writing a chunk of records to ``out`` in ``fmt``, and what to close after."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = pq.ParquetWriter(out, PARQUET_SCHEMA)
        return lambda records: writer.write_table(
            pa.Table.from_pylist([flat_row(r, safe=False) for r in records], PARQUET_SCHEMA)
        ), writer
    if fmt == "jsonl":
        return lambda records: out.write("".join(json_line(r) + "\n" for r in records)), None
    rows = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    rows.writeheader()
    safe = out.isatty()
    return lambda records: rows.writerows(flat_row(r, safe) for r in records), None


def numbered(records: list[dict[str, Any]], counts: dict[str, int]) -> list[dict[str, Any]]:
    """``records`` numbered on from ``counts["rows"]`` (the file's row), counting rows and
    errors into ``counts``; both engines write through it."""
    for record in records:
        record["row"] = counts["rows"]
        counts["rows"] += 1
        counts["errors"] += record["error"] is not None
    return records


def write_records(
    scorer: Scorer,
    texts: Iterable[Any],
    out: IO[Any],
    fmt: str,
    chunk_size: int = LOOKAHEAD,
    total: int | None = None,
    adapt_prior: bool = False,
    explain: bool | None = None,
) -> dict[str, int]:
    """Stream ``texts`` through the scorer into ``out`` (a text stream for CSV and JSONL, a
    binary one for Parquet: a row group per chunk), one record per text, in order; returns row
    counts. Progress goes to stderr, and only when it is a terminal. ``adapt_prior`` scores the
    texts as one chunk: the star mix is estimated over all of them."""
    if adapt_prior:
        texts = list(texts)
        chunk_size = max(1, len(texts))
    if fmt not in FORMATS:
        raise InputError(f"output format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    write, closing = record_writer(out, fmt)
    counts = {"rows": 0, "errors": 0}
    with tqdm(total=total, unit="review", desc="scoring", disable=None, leave=False) as bar:
        for chunk in _chunks(texts, chunk_size):
            records = scorer.score_records(chunk, adapt_prior=adapt_prior, explain=explain)
            write(numbered(records, counts))
            out.flush()
            bar.update(len(chunk))
    if closing is not None:
        closing.close()
    return counts


def score_file(
    scorer: Scorer, input_path: str | Path, output: Path | None, fmt: str | None = None
) -> dict[str, int]:
    """Score a file (or ``-``) into ``output`` (atomically) or stdout."""
    fmt = fmt or output_format(output, as_json=False)
    return write_texts(scorer, read_texts(input_path), output, fmt)


def write_texts(
    scorer: Scorer,
    texts: Iterable[Any],
    output: Path | None,
    fmt: str,
    adapt_prior: bool = False,
    explain: bool | None = None,
) -> dict[str, int]:
    """Score ``texts`` into ``output`` (atomically: a half-written file never appears) or
    stdout."""
    total = len(texts) if hasattr(texts, "__len__") else None
    options = {"total": total, "adapt_prior": adapt_prior, "explain": explain}
    if output is None:
        if fmt == "parquet":
            raise InputError("Parquet is written into a file", "pass --output scored.parquet")
        return write_records(scorer, texts, sys.stdout, fmt, **options)
    with atomic_path(output) as tmp, open_output(tmp, fmt) as f:
        return write_records(scorer, texts, f, fmt, **options)


def open_output(path: Path, fmt: str) -> IO[Any]:
    """``path`` opened for writing ``fmt``: binary for Parquet, else UTF-8 text as CSV wants."""
    return path.open("wb") if fmt == "parquet" else path.open("w", encoding="utf-8", newline="")
